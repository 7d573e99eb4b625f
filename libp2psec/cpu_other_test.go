//go:build !unix

package libp2psec

import "time"

// processCPU returns zero where getrusage is missing: the benchmarks' CPU
// figures are then zero too.
func processCPU() time.Duration { return 0 }
