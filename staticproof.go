package securepeer

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"sync/atomic"
	"time"
)

// An identity proves that it vouches for its Noise static key with a
// signature, in one of two statements (PROTOCOL.md, "Identities and static
// keys"): a permanent one, made by identities whose private key is in this
// process, and a timed one, made through a signer (ssh-agent, a token) and
// renewed while it signs, so that a key removed from the agent stops
// vouching within proofPeriod and a half.

// proofPeriod is the step of a timed proof's expiry: not_after is a
// multiple of it, in Unix seconds, which is what lets a verifier find it
// without its being sent.
const proofPeriod = time.Hour

// proofRetry is how long a signer-backed identity waits, after its signer
// failed, before it asks the signer again.
const proofRetry = time.Minute

// staticSignedMessage is the permanent statement by which an identity
// vouches for its Noise static key.
func staticSignedMessage(staticPub []byte) []byte {
	return append([]byte(labelStaticSig), staticPub...)
}

// timedSignedMessage is the timed statement by which an identity vouches
// for its Noise static key until notAfter, in Unix seconds.
func timedSignedMessage(staticPub []byte, notAfter int64) []byte {
	m := append([]byte(labelStaticSigUntil), staticPub...)
	return binary.BigEndian.AppendUint64(m, uint64(notAfter))
}

// periodsAt returns how many whole proof periods have passed at t since the
// Unix epoch.
func periodsAt(t time.Time) int64 {
	p := int64(proofPeriod / time.Second)
	s := t.Unix()
	if s < 0 {
		return (s - p + 1) / p // the floor, before 1970 too
	}
	return s / p
}

// proofNotAfter is the expiry a signer-backed identity signs at now: the
// multiple of proofPeriod nearest to now + proofPeriod, so that a fresh
// proof lives between half a period and a period and a half.
func proofNotAfter(now time.Time) int64 {
	return (periodsAt(now.Add(proofPeriod/2)) + 1) * int64(proofPeriod/time.Second)
}

// acceptedNotAfters returns the expiries of timed proofs a verifier accepts
// at now: the next two multiples of proofPeriod, the likelier first.
func acceptedNotAfters(now time.Time) [2]int64 {
	p := int64(proofPeriod / time.Second)
	next := (periodsAt(now) + 1) * p
	if likely := proofNotAfter(now); likely != next {
		return [2]int64{likely, next}
	}
	return [2]int64{next, next + p}
}

// verifyStaticProof reports whether sig proves that identity vouches for the
// Noise static key staticPub at now, in the permanent statement or in a
// timed one whose expiry a verifier accepts at now. Proofs that verified
// before are found in the proof cache first, the permanent statement
// first, so a peer with a file-backed identity costs what it always did.
func verifyStaticProof(identity, staticPub, sig []byte, now time.Time) bool {
	permanent := staticSignedMessage(staticPub)
	if proofs.has(identity, permanent, sig) {
		return true
	}
	var timed [2][]byte
	for i, notAfter := range acceptedNotAfters(now) {
		timed[i] = timedSignedMessage(staticPub, notAfter)
		if proofs.has(identity, timed[i], sig) {
			return true
		}
	}
	return proofs.check(identity, permanent, sig) || proofs.check(identity, timed[0], sig) || proofs.check(identity, timed[1], sig)
}

// A signerProof keeps the timed proof of a signer-backed identity's static
// key, and renews it through the signer when the expiry it would sign moves
// on, once each proofPeriod.
type signerProof struct {
	signer    crypto.Signer
	pub       ed25519.PublicKey
	staticPub []byte

	// asking is held, as a lock one can stop waiting for, while asking the
	// signer: by one handshake at a time.
	asking chan struct{}
	cur    atomic.Pointer[timedProof]
}

// A timedProof is a signature of the timed statement, with what the last
// attempt to renew it met.
type timedProof struct {
	notAfter int64 // Unix seconds
	sig      []byte
	failedAt time.Time // of the last failed renewal since sig was made; zero if none
	err      error     // why it failed
}

// usableAt reports whether a verifier whose clock says now accepts p.
func (p *timedProof) usableAt(now time.Time) bool {
	a := acceptedNotAfters(now)
	return p.notAfter == a[0] || p.notAfter == a[1]
}

// failedRecently reports whether the signer failed less than proofRetry
// before now.
func (p *timedProof) failedRecently(now time.Time) bool {
	if p.failedAt.IsZero() {
		return false
	}
	d := now.Sub(p.failedAt)
	return d >= 0 && d < proofRetry
}

// newSignerProof makes the first proof, signed at now.
func newSignerProof(signer crypto.Signer, pub ed25519.PublicKey, staticPub []byte, now time.Time) (*signerProof, error) {
	sp := &signerProof{signer: signer, pub: pub, staticPub: staticPub, asking: make(chan struct{}, 1)}
	notAfter := proofNotAfter(now)
	sig, err := sp.sign(notAfter)
	if errors.Is(err, errSignerBadSignature) {
		return nil, err
	}
	if err != nil {
		return nil, errorf("the signer refused to sign: %w", err)
	}
	sp.cur.Store(&timedProof{notAfter: notAfter, sig: sig})
	return sp, nil
}

// proof returns a signature that proves the static key at now. While the
// signer signs, it is renewed as the expiry moves on; when the signer
// fails, the last proof serves while verifiers accept it, and then the
// handshake fails with ErrSignerUnavailable. A handshake that finds
// another asking the signer uses the current proof if it still serves,
// and otherwise waits for the answer, until ctx ends: a signer that hangs
// (a confirmation nobody answers) holds up one handshake, not all.
func (sp *signerProof) proof(ctx context.Context, now time.Time) ([]byte, error) {
	want := proofNotAfter(now)
	p := sp.cur.Load()
	if p.notAfter == want {
		return p.sig, nil
	}
	select {
	case sp.asking <- struct{}{}:
	default:
		if p.usableAt(now) {
			return p.sig, nil
		}
		select {
		case sp.asking <- struct{}{}:
		case <-ctx.Done():
			return nil, errorf("%w: waiting for it to sign: %w", ErrSignerUnavailable, context.Cause(ctx))
		}
	}
	defer func() { <-sp.asking }()
	if p = sp.cur.Load(); p.notAfter == want {
		return p.sig, nil
	}
	if !p.failedRecently(now) {
		sig, err := sp.sign(want)
		if err == nil {
			sp.cur.Store(&timedProof{notAfter: want, sig: sig})
			return sig, nil
		}
		p = &timedProof{notAfter: p.notAfter, sig: p.sig, failedAt: now, err: err}
		sp.cur.Store(p)
	}
	if p.usableAt(now) {
		return p.sig, nil
	}
	return nil, errorf("%w: %w; its last proof of its static key expired at %s", ErrSignerUnavailable, p.err, time.Unix(p.notAfter, 0).UTC().Format(time.RFC3339))
}

// sign signs the timed statement for notAfter through the signer. Its
// error is the signer's own, or errSignerBadSignature.
func (sp *signerProof) sign(notAfter int64) ([]byte, error) {
	msg := timedSignedMessage(sp.staticPub, notAfter)
	sig, err := sp.signer.Sign(rand.Reader, msg, crypto.Hash(0))
	if err != nil {
		return nil, err
	}
	if !ed25519.Verify(sp.pub, msg, sig) {
		return nil, errSignerBadSignature
	}
	return sig, nil
}

var errSignerBadSignature = newError("the signer returned a signature that does not verify")
