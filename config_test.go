package securepeer

import "testing"

func TestChooseProtocol(t *testing.T) {
	tests := []struct {
		name                 string
		initiator, responder []string
		want                 string
		wantOK               bool
	}{
		{"neither", nil, nil, "", true},
		{"initiator only", []string{"h2"}, nil, "", true},
		{"responder only", nil, []string{"h2"}, "", true},
		{"same", []string{"h2"}, []string{"h2"}, "h2", true},
		{"responder's order wins", []string{"a", "b"}, []string{"b", "a"}, "b", true},
		{"unknown names skipped", []string{"x", "b"}, []string{"y", "b", "z"}, "b", true},
		{"nothing in common", []string{"a"}, []string{"b"}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := chooseProtocol(tt.initiator, tt.responder)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("chooseProtocol(%q, %q) = %q, %v; want %q, %v", tt.initiator, tt.responder, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
