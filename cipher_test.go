package securepeer

import "testing"

// TestChooseCipherWithUnknownIDs checks the rule for identifiers this side
// does not know (PROTOCOL.md, "Cipher choice"): they keep their positions
// for the rank sum, so that two implementations that know different
// ciphers still compute the same choice.
func TestChooseCipherWithUnknownIDs(t *testing.T) {
	const x, y = Cipher(0x7f01), Cipher(0x7f02) // unknown here
	tests := []struct {
		name       string
		init, resp []Cipher
		want       Cipher
		wantOK     bool
	}{
		{"unknown first", []Cipher{x, AES128GCM, ChaCha20Poly1305}, []Cipher{AES128GCM, ChaCha20Poly1305}, AES128GCM, true},
		// As sent, ChaCha20 is 0+1 = 1 and AES-256 3+0 = 3. With the
		// unknowns dropped both would be 1, and the tie would go to AES-256.
		{"unknowns shift one side", []Cipher{ChaCha20Poly1305, x, y, AES256GCM}, []Cipher{AES256GCM, ChaCha20Poly1305}, ChaCha20Poly1305, true},
		{"only unknown", []Cipher{x, y}, []Cipher{AES256GCM}, 0, false},
		{"unknown in both", []Cipher{x}, []Cipher{x}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := chooseCipher(tt.init, tt.resp)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("chooseCipher(%v, %v) = %v, %v; want %v, %v", tt.init, tt.resp, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
