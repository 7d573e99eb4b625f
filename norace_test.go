//go:build !race

package securepeer

const raceEnabled = false
