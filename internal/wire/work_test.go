package wire

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"testing"
)

// workExample is the worked example of PROTOCOL.md, "Work under load".
func workExample() (seed [WorkSeedSize]byte, e []byte) {
	for i := range seed {
		seed[i] = byte(i)
	}
	e = make([]byte, EphemeralKeySize)
	for i := range e {
		e[i] = byte(0x20 + i)
	}
	return seed, e
}

// TestWorkExample reproduces PROTOCOL.md's example: the least nonce that
// proves 8 and 16 bits, and the work hashes of it and of the nonce before.
func TestWorkExample(t *testing.T) {
	seed, e := workExample()
	for _, tc := range []struct {
		bits        int
		nonce       uint64
		hash, prior string
	}{
		{8, 145, "00a2313311ee40b77f8c43b169cd26bda8d290863009ffe151a07ae5afc5caed", "ed00f91e8b470ce48c4c99c93875dbdbec2de0c6046dbebe5ae556de73766222"},
		{16, 22898, "00003585ce826f6d39f264c300248b48126d2be307ef8ac0d9c50d6421a2e677", "a4d57be8e91ed1a5ca808453fa78d439c37468d8efed8cfe90cfb3cb4aaa67bb"},
	} {
		nonce, err := SolveWork(context.Background(), tc.bits, &seed, e)
		if err != nil || nonce != tc.nonce {
			t.Fatalf("%d bits: nonce %d, %v; want %d", tc.bits, nonce, err, tc.nonce)
		}
		if h := WorkHash(&seed, e, nonce); hex.EncodeToString(h[:]) != tc.hash {
			t.Errorf("%d bits: hash %x", tc.bits, h)
		}
		if h := WorkHash(&seed, e, nonce-1); hex.EncodeToString(h[:]) != tc.prior {
			t.Errorf("%d bits: hash of the nonce before %x", tc.bits, h)
		}
		if !CheckWork(tc.bits, &seed, e, nonce) || CheckWork(tc.bits, &seed, e, nonce-1) || CheckWork(tc.bits+8, &seed, e, nonce) {
			t.Errorf("%d bits: CheckWork disagrees with the hashes", tc.bits)
		}
	}
}

func TestParseWorkDemand(t *testing.T) {
	seed, _ := workExample()
	for _, tc := range []struct {
		name string
		b    []byte
		bits int
		ok   bool
	}{
		{"16 bits", AppendWorkDemand(nil, 16, &seed)[3:], 16, true},
		{"1 bit", AppendWorkDemand(nil, 1, &seed)[3:], 1, true},
		{"the most", AppendWorkDemand(nil, MaxWorkBits, &seed)[3:], MaxWorkBits, true},
		{"none", AppendWorkDemand(nil, 0, &seed)[3:], 0, false},
		{"too much", AppendWorkDemand(nil, MaxWorkBits+1, &seed)[3:], 0, false},
		{"short", AppendWorkDemand(nil, 16, &seed)[3:19], 0, false},
		{"long", append(AppendWorkDemand(nil, 16, &seed)[3:], 0), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bits, got, ok := ParseWorkDemand(tc.b)
			if bits != tc.bits || ok != tc.ok || ok && got != seed {
				t.Errorf("ParseWorkDemand = %d, %x, %v", bits, got, ok)
			}
		})
	}
	if d := AppendWorkDemand(nil, 16, &seed); !bytes.Equal(d[:4], []byte{0, 0, DemandWork, 16}) || len(d) != 3+WorkDemandSize {
		t.Errorf("AppendWorkDemand = %x", d)
	}
}

func TestWorkAnswerLen(t *testing.T) {
	for _, tc := range []struct {
		b    []byte
		want int
	}{
		{nil, 10}, {[]byte{0}, 10}, {[]byte{0, 0}, 3}, {[]byte{0, 8}, 10}, {[]byte{0xff, 0xff}, 10},
	} {
		if got := WorkAnswerLen(tc.b); got != tc.want {
			t.Errorf("WorkAnswerLen(%x) = %d, want %d", tc.b, got, tc.want)
		}
	}
}

func TestSolveWorkStops(t *testing.T) {
	seed, e := workExample()
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := errors.New("stop")
	cancel(stop)
	if _, err := SolveWork(ctx, MaxWorkBits, &seed, e); !errors.Is(err, stop) {
		t.Errorf("SolveWork with an ended context = %v, want its cause", err)
	}
}

// BenchmarkWorkHash is what one hash costs: a demand for b bits costs an
// initiator 2^b of them on average.
func BenchmarkWorkHash(b *testing.B) {
	seed, e := workExample()
	for i := range b.N {
		WorkHash(&seed, e, uint64(i))
	}
}
