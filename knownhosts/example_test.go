package knownhosts_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/knownhosts"
)

// A client that trusts a peer on first use and refuses a changed key, the
// way ssh does, as a Config.Verify.
func ExampleDB_Check() {
	dir, _ := os.MkdirTemp("", "knownhosts")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "known_hosts")
	const addr = "example.org:5000"

	verify := func(ctx context.Context, key securepeer.PublicKey) error {
		db, err := knownhosts.Load(path) // a missing file is an empty database
		if err != nil {
			return err
		}
		err = db.Check(addr, key)
		var unknown *knownhosts.UnknownHostError
		if errors.As(err, &unknown) {
			// First contact: a real client asks its user here.
			line, err := knownhosts.Line([]string{addr}, key)
			if err != nil {
				return err
			}
			_, err = knownhosts.Add(path, line)
			return err
		}
		return err // nil, or *KeyChangedError or *RevokedError: refuse
	}

	first, _ := securepeer.GenerateIdentity()
	impostor, _ := securepeer.GenerateIdentity()
	fmt.Println("first contact:", verify(context.Background(), first.PublicKey()))
	fmt.Println("same key again:", verify(context.Background(), first.PublicKey()))
	var changed *knownhosts.KeyChangedError
	fmt.Println("another key refused:", errors.As(verify(context.Background(), impostor.PublicKey()), &changed))
	// Output:
	// first contact: <nil>
	// same key again: <nil>
	// another key refused: true
}

// A server that lets in only the keys of an authorized_keys file, read
// again whenever the file changes.
func ExampleAuthorizedKeysFile() {
	dir, _ := os.MkdirTemp("", "authorized")
	defer os.RemoveAll(dir)
	friend, _ := securepeer.GenerateIdentity()
	stranger, _ := securepeer.GenerateIdentity()
	path := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(path, []byte(friend.PublicKey().String()+" friend\n"), 0o600); err != nil {
		log.Fatal(err)
	}

	allow, err := knownhosts.OpenAuthorizedKeys(path)
	if err != nil {
		log.Fatal(err)
	}
	config := &securepeer.Config{Identity: friend, Verify: allow.Verify}
	fmt.Println("friend:", config.Verify(context.Background(), friend.PublicKey()) == nil)
	fmt.Println("stranger:", config.Verify(context.Background(), stranger.PublicKey()) == nil)
	// Output:
	// friend: true
	// stranger: false
}
