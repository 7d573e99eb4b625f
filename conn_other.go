//go:build !unix

package securepeer

import "errors"

const haveReadFD = false

var errWouldBlock = errors.New("securepeer: read would block")

func readFD(fd uintptr, p []byte) (int, error) {
	return 0, errors.New("securepeer: reading a descriptor directly is not supported here")
}
