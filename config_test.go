package securepeer

import (
	"bytes"
	"reflect"
	"testing"
	"time"
)

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

// Clones share their ticket keys: a ticket one clone issued, another
// honours, including after the automatic keys rotate.
func TestCloneSharesTicketKeys(t *testing.T) {
	client, _ := ticketConfigs(t)
	now := time.Now()
	base := &Config{Identity: testIdentity(t, 2), Time: func() time.Time { return now }}
	recordedSession(t, client, base.Clone())
	if _, cs := recordedSession(t, client, base.Clone()); !cs.DidResume {
		t.Fatal("a clone did not honour another clone's ticket")
	}
	now = now.Add(25 * time.Hour) // rotation, seen by every clone
	if _, cs := recordedSession(t, client, base.Clone()); !cs.DidResume {
		t.Fatal("not resumed across the rotation")
	}
	if n := len(base.tickets().auto); n != 2 {
		t.Fatalf("the base has %d automatic keys, want 2 after the clones rotated them", n)
	}
	if _, cs := recordedSession(t, client, &Config{Identity: base.Identity}); cs.DidResume {
		t.Fatal("a Config that is not a clone honoured the ticket")
	}
}

// Clone copies every exported field, so that a field added later cannot be
// forgotten in it.
func TestCloneCopiesEveryField(t *testing.T) {
	var c Config
	v := reflect.ValueOf(&c).Elem()
	for i := range v.NumField() {
		f, sf := v.Field(i), v.Type().Field(i)
		if !sf.IsExported() {
			continue
		}
		switch sf.Name {
		case "Identity":
			c.Identity = testIdentity(t, 1)
		case "Verify":
			c.Verify = rejectAll
		case "Ciphers":
			c.Ciphers = []Cipher{AES128GCM}
		case "NextProtos":
			c.NextProtos = []string{"x"}
		case "ClientSessionCache":
			c.ClientSessionCache = NewLRUClientSessionCache(1)
		case "Time":
			c.Time = time.Now
		case "Rand":
			c.Rand = bytes.NewReader(nil)
		default:
			switch f.Kind() {
			case reflect.Bool:
				f.SetBool(true)
			case reflect.String:
				f.SetString("x")
			case reflect.Int64:
				f.SetInt(1)
			default:
				t.Fatalf("field %s of kind %v: teach this test (and Clone) about it", sf.Name, f.Kind())
			}
		}
	}
	w := reflect.ValueOf(c.Clone()).Elem()
	for i := range v.NumField() {
		sf := v.Type().Field(i)
		if !sf.IsExported() {
			continue
		}
		a, b := v.Field(i), w.Field(i)
		if a.Kind() == reflect.Func {
			if b.IsNil() {
				t.Errorf("Clone dropped %s", sf.Name)
			}
			continue
		}
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			t.Errorf("Clone did not copy %s", sf.Name)
		}
	}
}
