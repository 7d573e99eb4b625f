//go:build !windows

package main

import "os"

// openTTY opens the controlling terminal, /dev/tty, for reading and
// writing.
func openTTY() (*terminal, error) {
	f, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return &terminal{in: f, out: f}, nil
}
