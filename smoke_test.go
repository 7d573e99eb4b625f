package securepeer

import (
	"bytes"
	"io"
	"net"
	"testing"
)

func TestSmoke(t *testing.T) {
	a, _ := GenerateIdentity()
	b, _ := GenerateIdentity()
	for _, modes := range [][2]string{{"c", "s"}, {"n", "n"}, {"c", "n"}, {"n", "s"}} {
		p1, p2 := net.Pipe()
		mk := func(m string, c net.Conn, id *Identity) *Conn {
			cfg := &Config{Identity: id}
			switch m {
			case "c":
				return Client(c, cfg)
			case "s":
				return Server(c, cfg)
			}
			return NewConn(c, cfg)
		}
		x, y := mk(modes[0], p1, a), mk(modes[1], p2, b)
		errc := make(chan error, 1)
		go func() {
			if err := y.Handshake(); err != nil {
				errc <- err
				return
			}
			buf := make([]byte, 100)
			n, err := y.Read(buf)
			if err != nil {
				errc <- err
				return
			}
			_, err = y.Write(bytes.ToUpper(buf[:n]))
			y.CloseWrite()
			errc <- err
		}()
		if _, err := x.Write([]byte("beep boop")); err != nil {
			t.Fatal(modes, err)
		}
		got, err := io.ReadAll(x)
		if err != nil {
			t.Fatal(modes, err)
		}
		if err := <-errc; err != nil {
			t.Fatal(modes, err)
		}
		st := x.ConnectionState()
		t.Logf("%v: %q %+v remote=%s", modes, got, st.Cipher, st.RemoteKey.Fingerprint())
		if st.RemoteKey != b.PublicKey() || !st.PostQuantum {
			t.Fatal("bad state")
		}
	}
}
