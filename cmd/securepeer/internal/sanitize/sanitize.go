// Package sanitize makes the text a peer chose safe to show on a terminal.
package sanitize

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Text makes text that a peer chose safe to print on a terminal: every
// character that is not visible becomes '?'. That covers the controls that
// make terminal escapes (C0, DEL, C1), the invisible formatting characters
// (Unicode category Cf: among them the bidi controls U+202A..U+202E,
// U+2066..U+2069, U+200E, U+200F and U+061C, which can make a line read
// differently from what it holds, and the zero-width ones), line and
// paragraph separators, spaces other than ASCII's, private-use, surrogate
// and unassigned code points, invalid UTF-8, and the letters that draw
// nothing (the Hangul fillers, the Khmer inherent vowels).
func Text(s string) string {
	var b strings.Builder
	for _, r := range s {
		// range yields utf8.RuneError for each invalid byte.
		if r == utf8.RuneError || r != ' ' && !unicode.IsPrint(r) || invisible(r) {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// invisible reports the printable characters (in Go's sense: letters and
// marks) that draw nothing, so could hide text from the reader.
func invisible(r rune) bool {
	switch r {
	case 0x115F, 0x1160, 0x3164, 0xFFA0, // Hangul fillers
		0x17B4, 0x17B5, // Khmer inherent vowels
		0x2800: // braille blank
		return true
	}
	return unicode.Is(unicode.Variation_Selector, r)
}
