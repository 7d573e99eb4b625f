package execproto

import (
	"context"
	"io"
	"testing"
)

// BenchmarkExecCat sends b.N bytes through listen -exec cat's session,
// over loopback TCP, in securepeer-exec/2 (input and output framed) and
// securepeer-exec/1 (output framed), to show what /2's framing costs. One
// session per run of the benchmark, b.N bytes each way.
func BenchmarkExecCat(b *testing.B) {
	for _, proto := range []string{Protocol2, Protocol1} {
		b.Run(proto, func(b *testing.B) {
			b.SetBytes(1)
			cc, sc := securePair(b)
			x := testExecServer("cat", nil)
			served := make(chan error, 1)
			b.ResetTimer()
			go func() { served <- x.Serve(context.Background(), sc, proto, "127.0.0.1:1") }()
			in := io.LimitReader(zeros{}, int64(b.N))
			var n int64
			switch proto {
			case Protocol2:
				out := &countWriter{}
				st, err := (&Client{Stdin: in, Stdout: out, Stderr: io.Discard}).Run(context.Background(), cc)
				if err != nil || st.Code != 0 {
					b.Fatal(st, err)
				}
				n = out.n
			default:
				go func() {
					copyStream(cc, in)
					cc.CloseWrite()
				}()
				r := NewV1Reader(cc)
				var err error
				if n, err = io.Copy(io.Discard, r); err != nil || r.status != 0 {
					b.Fatal(r.status, err)
				}
				cc.Close()
			}
			if err := <-served; err != nil || n != int64(b.N) {
				b.Fatalf("%d bytes back, want %d; server: %v", n, b.N, err)
			}
		})
	}
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}
