//go:build !unix

package main

import "os"

// watchWindow does nothing: there is no signal for a console's new size.
func watchWindow(chan<- os.Signal) (stop func()) { return func() {} }
