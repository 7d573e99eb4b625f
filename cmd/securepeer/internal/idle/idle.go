// Package idle ends what has had no data either way for a while: the
// command's -idle.
package idle

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// An Error ends a stream that had no data either way for -idle.
type Error struct{ d time.Duration }

func (e *Error) Error() string {
	return fmt.Sprintf("no data either way for %v (-idle), so the stream was aborted", e.d)
}

// Watch returns a context that ends with an *[Error] once activity
// has not changed for d; d = 0 never does. stop releases it.
func Watch(ctx context.Context, d time.Duration, activity func() int64) (_ context.Context, stop func()) {
	ictx, cancel := context.WithCancelCause(ctx)
	if d <= 0 {
		return ictx, func() { cancel(nil) }
	}
	go func() {
		t := time.NewTicker(max(d/4, 10*time.Millisecond))
		defer t.Stop()
		last, since := activity(), time.Now()
		for {
			select {
			case <-ictx.Done():
				return
			case <-t.C:
			}
			if a := activity(); a != last {
				last, since = a, time.Now()
			} else if time.Since(since) >= d {
				cancel(&Error{d})
				return
			}
		}
	}()
	return ictx, func() { cancel(nil) }
}

// A CountingReader counts in N the bytes read from R: a stream's activity,
// for Watch.
type CountingReader struct {
	R io.Reader
	N *atomic.Int64
}

func (c *CountingReader) Read(p []byte) (int, error) {
	n, err := c.R.Read(p)
	c.N.Add(int64(n))
	return n, err
}
