package idle

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestWatch checks that the context ends with an *Error once activity
// stops changing, never while it changes (here: at every look), and never
// for d = 0.
func TestWatch(t *testing.T) {
	const d = 20 * time.Millisecond
	looks := make(chan int64, 100)
	var n int64
	active, stop := Watch(context.Background(), d, func() int64 {
		n++ // only Watch's goroutine calls it
		select {
		case looks <- n:
		default:
		}
		return n
	})
	for range 20 { // many ticks, each seeing a change
		<-looks
	}
	if active.Err() != nil {
		t.Fatalf("ended while active: %v", context.Cause(active))
	}
	stop()

	idle, stop := Watch(context.Background(), d, func() int64 { return 7 })
	defer stop()
	<-idle.Done()
	var ie *Error
	if !errors.As(context.Cause(idle), &ie) || ie.d != d {
		t.Errorf("cause %v, want an *Error of %v", context.Cause(idle), d)
	}

	never, stop := Watch(context.Background(), 0, func() int64 { return 7 })
	stop()
	if !errors.Is(context.Cause(never), context.Canceled) {
		t.Errorf("d = 0: cause %v after stop, want context.Canceled", context.Cause(never))
	}
}
