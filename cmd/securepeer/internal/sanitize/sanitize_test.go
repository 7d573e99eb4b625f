package sanitize

import (
	"testing"
	"unicode"
)

// TestText checks that a peer's text reaches the terminal with nothing
// that is not visible: terminal escapes, bidi controls that reorder what is
// shown, zero-width and other invisible characters all become '?', and
// ordinary text, accented or not Latin, is kept.
func TestText(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"plain", "connect failed: connection refused", "connect failed: connection refused"},
		{"accents and other scripts", "café, Ελληνικά, 日本語, emoji 🔑", "café, Ελληνικά, 日本語, emoji 🔑"},
		{"terminal escape", "\x1b[2Jowned\x07", "?[2Jowned?"},
		{"newline and tab", "a\nb\tc\r", "a?b?c?"},
		{"DEL and C1", "a\x7fb\u009bc\u0085", "a?b?c?"},
		{"right-to-left override", "refused: \u202egnp.exe", "refused: ?gnp.exe"},
		{"every bidi embedding and override", "\u202a\u202b\u202c\u202d\u202e", "?????"},
		{"bidi isolates", "\u2066a\u2067b\u2068c\u2069", "?a?b?c?"},
		{"bidi marks", "\u200e\u200f\u061c", "???"},
		{"zero-width characters", "a\u200bb\u200cc\u200dd\u2060e\ufeff", "a?b?c?d?e?"},
		{"soft hyphen", "pay\u00adpal", "pay?pal"},
		{"line and paragraph separators", "a\u2028b\u2029c", "a?b?c"},
		{"spaces other than ASCII's", "a\u00a0b\u2003c\u3000d", "a?b?c?d"},
		{"Hangul fillers", "a\u3164b\u115fc\uffa0", "a?b?c?"},
		{"variation selector", "a\ufe0fb", "a?b"},
		{"private use and unassigned", "a\ue000b\U000e0001c\U0010fffe", "a?b?c?"},
		{"tag characters", "a\U000e0041b", "a?b"},
		{"invalid UTF-8", "a\xffb\xc3", "a?b?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Text(tc.in); got != tc.want {
				t.Errorf("Text(%+q) = %+q, want %+q", tc.in, got, tc.want)
			}
		})
	}
}

// TestTextFormatCharacters checks every character of Unicode category
// Cf (format), which holds the bidi controls and the zero-width characters:
// none may pass.
func TestTextFormatCharacters(t *testing.T) {
	n := 0
	for _, rng := range unicode.Cf.R16 {
		for r := rune(rng.Lo); r <= rune(rng.Hi); r += rune(rng.Stride) {
			if got := Text(string(r)); got != "?" {
				t.Errorf("Text(%U) = %+q, want \"?\"", r, got)
			}
			n++
		}
	}
	for _, rng := range unicode.Cf.R32 {
		for r := rune(rng.Lo); r <= rune(rng.Hi); r += rune(rng.Stride) {
			if got := Text(string(r)); got != "?" {
				t.Errorf("Text(%U) = %+q, want \"?\"", r, got)
			}
			n++
		}
	}
	if n < 150 {
		t.Fatalf("checked %d format characters; the table of category Cf looks wrong", n)
	}
}
