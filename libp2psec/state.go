package libp2psec

import (
	"runtime"
	"sync"
	"weak"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/securepeer/securepeer"
)

// SecurepeerState returns the securepeer state of c, a connection of a
// go-libp2p host (from Network().ConnsToPeer, a stream's Conn, a
// notifiee), and true, if a [Transport] of this process secured it and it
// is still open: whether it resumed a session ([securepeer.ConnectionState]
// DidResume, the "cheap redial"), its cipher, its channel binding. It
// works for relayed (/p2p-circuit) connections too, whose ConnState does
// not name their security protocol. For a connection that another
// security protocol (Noise, TLS) secured, or one that has been closed, it
// returns the zero state and false.
//
// A host hands out its own connection type, which does not reach the
// securepeer connection under it, so the package finds it by the peer's
// public key: each connection this package secures returns a public key
// of its own from RemotePublicKey, which a host passes through unchanged.
func SecurepeerState(c network.Conn) (securepeer.ConnectionState, bool) {
	sc := secured.find(c.RemotePublicKey())
	if sc == nil || sc.remoteID != c.RemotePeer() || sc.localID != c.LocalPeer() {
		return securepeer.ConnectionState{}, false
	}
	return sc.SecurepeerState(), true
}

// secured holds the open connections of every Transport of this process,
// by the public key object each returns from RemotePublicKey.
var secured = &registry{conns: make(map[crypto.PubKey]weak.Pointer[Conn])}

// A registry maps public key objects to the connections that returned
// them. It holds no connection alive: an entry goes when its connection is
// closed or, never closed, collected.
type registry struct {
	mu    sync.Mutex
	conns map[crypto.PubKey]weak.Pointer[Conn]
}

// add registers c, whose handshake has completed.
func (r *registry) add(c *Conn) {
	key := c.remoteKey
	r.mu.Lock()
	r.conns[key] = weak.Make(c)
	r.mu.Unlock()
	runtime.AddCleanup(c, r.remove, key)
}

// remove forgets the connection whose public key object is key.
func (r *registry) remove(key crypto.PubKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.conns, key)
}

// find returns the open connection whose public key object is key, or nil.
func (r *registry) find(key crypto.PubKey) *Conn {
	if key == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := key.(*crypto.Ed25519PublicKey); !ok {
		return nil // not a key this package hands out; and maybe not comparable
	}
	return r.conns[key].Value()
}
