package main

// Who may run listen -exec's command.

// execAnyKeyFlag is listen's flag for running -exec without -allow: its
// name says what it does, as ssh's and Go's footguns say Insecure.
const execAnyKeyFlag = "insecure-exec-any-key"

// checkExecAccess refuses listen -exec without -allow unless the user says
// with execAnyKeyFlag that any key may run the command: listen accepts
// any key without -allow, so -exec alone would give every machine that can
// reach the port a way to run the command, which for sh or bash is a
// remote shell for the whole network.
func checkExecAccess(command, allow string, anyKey bool) error {
	switch {
	case anyKey && command == "":
		return usageErrorf("listen: -%s is for -exec", execAnyKeyFlag)
	case anyKey && allow != "":
		return usageErrorf("listen: -%s and -allow contradict each other: -allow lets only its keys in", execAnyKeyFlag)
	case command == "" || allow != "":
		return nil
	case !anyKey:
		return usageErrorf("listen: -exec without -allow would run %q for any key that connects, which for a shell is a remote shell for anyone who can reach the port; give -allow FILE with the keys that may run it (securepeer id prints a key), or -%s if every key may", command, execAnyKeyFlag)
	}
	return nil // listen warns that any key runs the command
}
