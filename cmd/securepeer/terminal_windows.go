//go:build windows

package main

import "os"

// openTTY opens the console: CONIN$ to read answers, CONOUT$ to ask, as
// Windows has no /dev/tty. They are the console even when stdin and stdout
// are redirected, as they carry the stream.
func openTTY() (*terminal, error) {
	in, err := os.OpenFile("CONIN$", os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	out, err := os.OpenFile("CONOUT$", os.O_WRONLY, 0)
	if err != nil {
		in.Close()
		return nil, err
	}
	return &terminal{in: in, out: out}, nil
}
