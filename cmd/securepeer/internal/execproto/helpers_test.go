package execproto

import "github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"

// testTimeout bounds what a test waits for: a hang, not a slow machine.
const testTimeout = testutil.Timeout
