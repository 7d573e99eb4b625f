package main

// How many sessions listen -exec, -to and -from serve at once, in all and
// for one peer key: whatever an admitted peer can make listen hold is
// bounded (a tunnel connection up to about 310 MiB, an -exec session a
// process), and no one key can take every session from the others.

import (
	"context"
	"fmt"
	"sync"
)

// sessionLimits bound listen's sessions: total at once, and perKey of
// them for one peer key.
type sessionLimits struct{ total, perKey int }

// defaultSessionLimits are listen's -max-sessions and
// -max-sessions-per-key (README, "What a peer can cost", says why).
var defaultSessionLimits = sessionLimits{total: 256, perKey: 16}

// maxRefusing bounds the refusals in progress: each waits up to a few
// seconds for the peer to read why; beyond it, a session is aborted
// without a reason, so that a peer that opens sessions faster than they
// are refused holds no more than this many.
const maxRefusing = 64

// check validates the limits; stdio says that listen serves stdio, which
// has no use for them.
func (l sessionLimits) check(stdio bool) error {
	switch {
	case stdio:
		return usageErrorf("listen: -max-sessions and -max-sessions-per-key are for -exec, -to and -from; stdio serves one peer at a time")
	case l.total < 1 || l.perKey < 1:
		return usageErrorf("listen: -max-sessions and -max-sessions-per-key must be at least 1")
	case l.perKey > l.total:
		return usageErrorf("listen: -max-sessions-per-key %d is more than -max-sessions %d", l.perKey, l.total)
	}
	return nil
}

// A sessionCounter counts listen's sessions, in all and by peer key, and
// refuses those beyond its limits.
type sessionCounter struct {
	limits sessionLimits
	// refuse tells the peer of s why its session does not run, in the
	// protocol it negotiated, and ends its connection.
	refuse func(ctx context.Context, s *stream, reason string)
	// notef says that a session was refused; a peer can cause it as fast
	// as it likes, so it must be rate-limited.
	notef func(format string, args ...any)

	mu       sync.Mutex
	total    int
	byKey    map[string]int
	refusing int
	wg       sync.WaitGroup // the refusals in progress
}

func newSessionCounter(l sessionLimits, refuse func(context.Context, *stream, string), notef func(string, ...any)) *sessionCounter {
	return &sessionCounter{limits: l, refuse: refuse, notef: notef, byKey: map[string]int{}}
}

// take counts s in, and reports whether it may run; if not, it has begun
// refusing it. Each session taken is given back with done.
func (c *sessionCounter) take(ctx context.Context, s *stream) bool {
	key := s.peer.String()
	c.mu.Lock()
	var reason, note string
	switch {
	case c.byKey[key] >= c.limits.perKey:
		reason = fmt.Sprintf("listen serves %s for this key already, the most one key may have (its -max-sessions-per-key); end one of them, or try again later", sessionCount(int64(c.limits.perKey)))
		note = fmt.Sprintf("%s of that key run already (-max-sessions-per-key)", sessionCount(int64(c.limits.perKey)))
	case c.total >= c.limits.total:
		reason = fmt.Sprintf("listen serves %s already, the most it allows (its -max-sessions); try again later", sessionCount(int64(c.limits.total)))
		note = fmt.Sprintf("%s run already (-max-sessions)", sessionCount(int64(c.limits.total)))
	default:
		c.total++
		c.byKey[key]++
		c.mu.Unlock()
		return true
	}
	refusing := c.refusing < maxRefusing
	if refusing {
		c.refusing++
		c.wg.Add(1)
	}
	c.mu.Unlock()
	c.notef("refused a session of %s from %s: %s", s.peer.Fingerprint(), s.remoteAddr, note)
	if !refusing {
		s.abort()
		return false
	}
	go func() {
		defer c.wg.Done()
		c.refuse(ctx, s, reason)
		c.mu.Lock()
		c.refusing--
		c.mu.Unlock()
	}()
	return false
}

// done gives back a session that take let run.
func (c *sessionCounter) done(s *stream) {
	key := s.peer.String()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if c.byKey[key]--; c.byKey[key] == 0 {
		delete(c.byKey, key)
	}
}

// wait returns once no refusal is in progress.
func (c *sessionCounter) wait() { c.wg.Wait() }
