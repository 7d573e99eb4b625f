// Package locate publishes where a securepeer node can be reached, and
// finds where another is, through a libp2p Kademlia DHT: the public one
// (libp2p's Amino DHT, which IPFS uses) or a private one. It is the option
// for peers that have no relay in common; the relay a user runs stays the
// default way to meet.
//
// # Two hosts
//
// The public DHT's peers speak Noise and TLS, not securepeer, and a node
// speaks securepeer only (../PROTOCOL.md, "Only securepeer"). So a
// [Locator] is a libp2p host of its own, apart from the node: a fresh
// Ed25519 key made for it alone, Noise, TCP, and the DHT protocol, nothing
// else. It never carries application data, and its key is never the
// node's, so its connections tie the node's key to nothing but the records
// it reads and writes.
//
// # The record
//
// What the DHT stores is an IPNS record (https://specs.ipfs.tech/ipns/),
// the one kind of signed record that public DHT peers accept from anyone:
// stored under the IPNS name of the node's key (its peer ID), signed by
// that key, with the node's addresses in a field of its signed data
// ("securepeer-addrs", multiaddrs one per line: its relays' circuit
// addresses, and any direct ones) and a sequence number from the clock,
// so that a newer record wins. Its value, which IPFS resolves, is the
// empty inline block: the record names no content. DHT peers check the
// signature, the name and the expiry before they store or return a
// record, and [Locator.Lookup] checks them again, so the DHT can withhold
// a record or return an old one (until it expires: a day), but cannot
// make anyone else's addresses pass for the node's. A lookup's result is
// where to try; the node dialed still proves its key in the handshake.
//
// # What a record shows
//
// Anyone who knows a node's key can look its record up: the addresses in
// it tell them where the node can be reached (through which relays, from
// which addresses), for as long as it publishes. A node that must not be
// found by whoever knows its key must not publish. The DHT peers that
// store the record see the Locator's address when it publishes, and a
// lookup shows the looker's address to the peers it asks, with the name it
// looks for.
package locate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/boxo/path"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/libp2psec"
	"github.com/securepeer/securepeer/p2p"
)

// addrsField is the name of the signed field of a record that holds the
// node's addresses.
const addrsField = "securepeer-addrs"

// emptyBlock is the record's value: the CID of the empty inline block.
const emptyBlock = "/ipfs/bafkqaaa"

// Record lifetimes: how long a record is valid, and how long others may
// cache it. A node republishes before the first ends, and whenever its
// addresses change.
const (
	RecordLifetime = 24 * time.Hour
	RecordTTL      = 5 * time.Minute
)

// maxAddrs bounds the addresses a record carries, and a lookup returns.
const maxAddrs = 32

// Errors a lookup returns.
var (
	ErrNotFound  = errors.New("locate: no record for this key in the DHT")
	ErrBadRecord = errors.New("locate: the DHT returned a record that does not check")
)

// PublicBootstrap are the public DHT's bootstrap peers, as go-libp2p-kad-dht
// lists them: pass them as [Config.Bootstrap] to use the public network.
// Nothing here uses them unless told to.
func PublicBootstrap() []string {
	var out []string
	for _, a := range dht.DefaultBootstrapPeers {
		out = append(out, a.String())
	}
	return out
}

// Config configures a [Locator].
type Config struct {
	// Bootstrap are multiaddrs, with peer IDs, of DHT peers to join
	// through: PublicBootstrap() for the public DHT, or the members of a
	// private one. At least one is needed.
	Bootstrap []string

	// ListenAddrs are TCP multiaddrs to listen on; nil listens on none,
	// which suits a client.
	ListenAddrs []string

	// Server makes the Locator answer DHT queries and store records, as a
	// DHT member does; it should be reachable at ListenAddrs. Otherwise
	// it only asks (DHT client mode), as a host behind a NAT should.
	Server bool
}

// A Locator is a DHT host apart from any node, as the package comment
// describes.
type Locator struct {
	host host.Host
	dht  *dht.IpfsDHT
}

// Start starts a Locator and joins the DHT through cfg.Bootstrap.
func Start(ctx context.Context, cfg Config) (*Locator, error) {
	var boot []peer.AddrInfo
	for _, s := range cfg.Bootstrap {
		ai, err := peer.AddrInfoFromString(s)
		if err != nil {
			return nil, fmt.Errorf("locate: bootstrap address %q: %w", s, err)
		}
		boot = append(boot, *ai)
	}
	if len(boot) == 0 && !cfg.Server {
		return nil, errors.New("locate: Config.Bootstrap is empty: a client needs a DHT peer to start from")
	}
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, fmt.Errorf("locate: %w", err)
	}
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.NoTransports,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Ping(false),
		libp2p.DisableRelay(),
		libp2p.UserAgent("securepeer-locate"),
	}
	if len(cfg.ListenAddrs) > 0 {
		opts = append(opts, libp2p.ListenAddrStrings(cfg.ListenAddrs...))
	} else {
		opts = append(opts, libp2p.NoListenAddrs)
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("locate: starting the DHT host: %w", err)
	}
	mode := dht.ModeClient
	if cfg.Server {
		mode = dht.ModeServer
	}
	d, err := dht.New(h, dht.Mode(mode), dht.BootstrapPeers(boot...))
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("locate: starting the DHT: %w", err)
	}
	l := &Locator{host: h, dht: d}
	for _, ai := range boot {
		// Joining needs one peer; the others are tried by the DHT itself.
		if err := h.Connect(ctx, ai); err == nil {
			break
		}
	}
	if err := d.Bootstrap(ctx); err != nil {
		l.Close()
		return nil, fmt.Errorf("locate: joining the DHT: %w", err)
	}
	return l, nil
}

// Addrs returns the Locator's own addresses, with its peer ID, for other
// DHT members to bootstrap from.
func (l *Locator) Addrs() []string {
	self := ma.StringCast("/p2p/" + l.host.ID().String())
	var out []string
	for _, a := range l.host.Addrs() {
		out = append(out, a.Encapsulate(self).String())
	}
	return out
}

// Peers returns the number of DHT peers in the Locator's routing table.
func (l *Locator) Peers() int { return l.dht.RoutingTable().Size() }

// Close leaves the DHT.
func (l *Locator) Close() error {
	err := l.dht.Close()
	return errors.Join(err, l.host.Close())
}

// Publish stores in the DHT a record, signed by id, saying that id's node
// can be reached at addrs (as [p2p.Node.Addrs] gives them: circuit
// addresses through its relays, and direct ones). A later Publish
// replaces it.
func (l *Locator) Publish(ctx context.Context, id *securepeer.Identity, addrs []string) error {
	rec, name, err := NewRecord(id, addrs, time.Now())
	if err != nil {
		return err
	}
	if err := l.dht.PutValue(ctx, string(name.RoutingKey()), rec); err != nil {
		return fmt.Errorf("locate: storing the record in the DHT: %w", err)
	}
	return nil
}

// Lookup returns the addresses that the latest record of key, found in
// the DHT, gives: where to dial key's node ([p2p.Node.AddAddrs] takes
// them). The record's signature, name and expiry are checked; the node
// proves its key in the handshake all the same.
func (l *Locator) Lookup(ctx context.Context, key securepeer.PublicKey) ([]string, error) {
	name, err := nameOf(key)
	if err != nil {
		return nil, err
	}
	b, err := l.dht.GetValue(ctx, string(name.RoutingKey()))
	if err != nil {
		return nil, fmt.Errorf("%w (%w)", ErrNotFound, err)
	}
	return ParseRecord(key, b)
}

// NewRecord returns the record that says where id's node can be reached
// at addrs, made at now, and the IPNS name it is stored under.
func NewRecord(id *securepeer.Identity, addrs []string, now time.Time) ([]byte, ipns.Name, error) {
	if len(addrs) == 0 || len(addrs) > maxAddrs {
		return nil, ipns.Name{}, fmt.Errorf("locate: %d addresses; a record carries 1 to %d", len(addrs), maxAddrs)
	}
	for _, a := range addrs {
		if _, err := ma.NewMultiaddr(a); err != nil || strings.ContainsAny(a, "\n") {
			return nil, ipns.Name{}, fmt.Errorf("locate: address %q is not a multiaddr", a)
		}
	}
	sk, err := privateKey(id)
	if err != nil {
		return nil, ipns.Name{}, err
	}
	name, err := nameOf(id.PublicKey())
	if err != nil {
		return nil, ipns.Name{}, err
	}
	value, err := path.NewPath(emptyBlock)
	if err != nil {
		return nil, ipns.Name{}, fmt.Errorf("locate: %w", err)
	}
	rec, err := ipns.NewRecord(sk, value, uint64(now.UnixNano()), now.Add(RecordLifetime), RecordTTL,
		ipns.WithV1Compatibility(false), ipns.WithPublicKey(false),
		ipns.WithMetadata(map[string]any{addrsField: strings.Join(addrs, "\n")}))
	if err != nil {
		return nil, ipns.Name{}, fmt.Errorf("locate: signing the record: %w", err)
	}
	b, err := ipns.MarshalRecord(rec)
	if err != nil {
		return nil, ipns.Name{}, fmt.Errorf("locate: %w", err)
	}
	return b, name, nil
}

// ParseRecord checks a record of key's (its signature by key, under key's
// name, not expired) and returns the addresses it gives.
func ParseRecord(key securepeer.PublicKey, b []byte) ([]string, error) {
	name, err := nameOf(key)
	if err != nil {
		return nil, err
	}
	rec, err := ipns.UnmarshalRecord(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRecord, err)
	}
	if err := ipns.ValidateWithName(rec, name); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRecord, err)
	}
	mv, err := rec.Metadata(addrsField)
	if err != nil {
		return nil, fmt.Errorf("%w: no addresses: %w", ErrBadRecord, err)
	}
	s, err := mv.AsString()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRecord, err)
	}
	addrs := strings.Split(s, "\n")
	if len(addrs) > maxAddrs {
		return nil, fmt.Errorf("%w: %d addresses, more than %d", ErrBadRecord, len(addrs), maxAddrs)
	}
	for _, a := range addrs {
		if _, err := ma.NewMultiaddr(a); err != nil {
			return nil, fmt.Errorf("%w: address %q: %w", ErrBadRecord, a, err)
		}
	}
	return addrs, nil
}

// nameOf returns the IPNS name of key: its peer ID.
func nameOf(key securepeer.PublicKey) (ipns.Name, error) {
	id, err := p2p.PeerID(key)
	if err != nil {
		return ipns.Name{}, err
	}
	return ipns.NameFromPeer(id), nil
}

// privateKey returns id's key as a libp2p key, to sign records with, as
// p2p's host key is made: it signs through id.Signer(), so a key behind
// ssh-agent signs there.
func privateKey(id *securepeer.Identity) (crypto.PrivKey, error) {
	if id == nil {
		return nil, errors.New("locate: no identity")
	}
	key, err := libp2psec.SignerKey(id.Signer())
	if err != nil {
		return nil, fmt.Errorf("locate: %w", err)
	}
	return key, nil
}
