package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/securepeer/securepeer/internal/testenv"
)

// The test binary doubles as the securepeer command: testscript installs it
// on $PATH as "securepeer" for the scripts, and the Go tests in
// e2e_test.go run that same file.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"securepeer":            testCommandMain,
		"securepeer-dht-member": testDHTMemberMain,
	})
}

// testCommandMain is main with the test hooks, which only the test binary
// reads from its environment.
func testCommandMain() {
	testOnlyAddrFile = os.Getenv("SECUREPEER_TESTONLY_ADDR_FILE")
	testOnlyExitFile = os.Getenv("SECUREPEER_TESTONLY_EXIT_FILE")
	testOnlyNoTerminal = os.Getenv("SECUREPEER_TESTONLY_TERMINAL") != "1"
	testOnlyNoMux = os.Getenv("SECUREPEER_TESTONLY_NO_MUX") == "1"
	testOnlyDHTRelayedOnly = os.Getenv("SECUREPEER_TESTONLY_DHT_RELAYED_ONLY") == "1"
	if p := os.Getenv("SECUREPEER_TESTONLY_EXEC_PROTOS"); p != "" {
		testOnlyExecProtos = strings.Split(p, ",")
	}
	if k := os.Getenv("SECUREPEER_TESTONLY_KEEPALIVE"); k != "" {
		d, err := time.ParseDuration(k)
		if err != nil {
			panic(err)
		}
		testOnlyKeepAlive = d
	}
	if g := os.Getenv("SECUREPEER_TESTONLY_GRACE"); g != "" {
		d, err := time.ParseDuration(g)
		if err != nil {
			panic(err)
		}
		testOnlyGrace = d
	}
	if w := os.Getenv("SECUREPEER_TESTONLY_DIRECT_WAIT"); w != "" {
		d, err := time.ParseDuration(w)
		if err != nil {
			panic(err)
		}
		testOnlyDirectWait = d
	}
	main()
}

// scriptTimeout bounds waits inside scripts; it is generous because CI
// machines are small and tests run with -race.
const scriptTimeout = 60 * time.Second

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			env.Setenv("HOME", filepath.Join(env.WorkDir, "home"))
			env.Setenv("SECUREPEER_HOME", filepath.Join(env.WorkDir, "home", ".securepeer"))
			// The legacy package's test keys, whose fingerprints are known.
			keys, err := filepath.Abs(filepath.Join("..", "..", "legacy", "testdata", "keys"))
			env.Setenv("LEGACY_KEYS", keys)
			return err
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"waitaddr": cmdWaitAddr,
			"exitcode": cmdExitCode,
			"filemode": cmdFileMode,
		},
		Condition: func(cond string) (bool, error) {
			if cond == "interop" {
				// [interop] holds where ssh-keygen exists; CI sets
				// SECUREPEER_REQUIRE_INTEROP=1 so that a missing tool fails
				// instead of skipping.
				_, err := testenv.LookTool("ssh-keygen")
				if err != nil && testenv.Required() {
					return false, fmt.Errorf("%v (SECUREPEER_REQUIRE_INTEROP=1 makes that a failure)", err)
				}
				return err == nil, nil
			}
			return false, errors.New("unknown condition " + cond)
		},
	})
}

// cmdWaitAddr waits for the address file a background listener writes
// (SECUREPEER_TESTONLY_ADDR_FILE) and puts the address in an environment
// variable: waitaddr FILE VAR.
func cmdWaitAddr(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: waitaddr FILE VAR")
	}
	path := ts.MkAbs(args[0])
	deadline := time.Now().Add(scriptTimeout)
	for {
		data, err := os.ReadFile(path)
		if err == nil && len(data) > 0 {
			ts.Setenv(args[1], strings.TrimSpace(string(data)))
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("no address in %s after %v", args[0], scriptTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cmdExitCode runs a command and checks its exit code, keeping its stdout
// and stderr for the commands that follow: exitcode N COMMAND ARGS...
func cmdExitCode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exitcode N COMMAND [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exitcode: %v", err)
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		got = ee.ExitCode()
	case err != nil:
		ts.Fatalf("exitcode: %v", err)
	}
	if got != want {
		ts.Fatalf("%s exited with %d, want %d", args[1], got, want)
	}
}

// cmdFileMode checks a file's permission bits: filemode FILE 0600.
func cmdFileMode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: filemode FILE MODE")
	}
	want, err := strconv.ParseUint(args[1], 8, 32)
	if err != nil {
		ts.Fatalf("filemode: %v", err)
	}
	fi, err := os.Stat(ts.MkAbs(args[0]))
	ts.Check(err)
	if got := fi.Mode().Perm(); got != os.FileMode(want) {
		ts.Fatalf("%s has mode %04o, want %04o", args[0], got, want)
	}
}
