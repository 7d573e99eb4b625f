// Package natlabtest runs the test binary again as a peer process inside a
// host of a NAT lab (package natlab), told what to be by a spec it reads
// from its environment. It is for tests only.
package natlabtest
