//go:build !unix

package securepeer

import "time"

// processCPU returns zero where getrusage is missing: the benchmarks' CPU
// figures are then left out.
func processCPU() time.Duration { return 0 }
