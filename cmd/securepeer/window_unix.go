//go:build unix

package main

import (
	"os"
	"os/signal"
	"syscall"
)

// watchWindow sends on c each time the terminal's size changes (SIGWINCH),
// until stop is called.
func watchWindow(c chan<- os.Signal) (stop func()) {
	signal.Notify(c, syscall.SIGWINCH)
	return func() { signal.Stop(c) }
}
