package netlock

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Conn is one TCP connection, seen from the local end.
type Conn struct {
	Local, Remote netip.AddrPort
}

// Options say what to lock and where.
type Options struct {
	Conns      []Conn   // connections to lock (more can be added with Lock.Add)
	LocalPorts []uint16 // lock every TCP packet to or from these local ports
	// Interfaces to attach to, by name; empty means every interface that is up, lo included.
	Interfaces []string
	// PassMark lets packets with this skb mark through (0: none). soccr.PacketMark is the mark of the
	// segments soccr forges while restoring half-closed connections.
	PassMark uint32
	// MaxConns bounds the number of locked connections (default 8192).
	MaxConns int
}

// Lock drops the packets of a set of connections until Release.
type Lock struct {
	mu       sync.Mutex
	released bool
	conns    *ebpf.Map // connKey -> 1, one entry per direction
	ports    *ebpf.Map // portKey -> 1
	stats    *ebpf.Map // per-CPU u64: packets dropped
	progs    []*ebpf.Program
	links    []link.Link
	pinDir   string // set while the lock is pinned (see Pin)
}

type connKey [36]byte // saddr[16] daddr[16] sport[2] dport[2], network byte order
type portKey [2]byte  // network byte order

func keyOf(src, dst netip.AddrPort) connKey {
	var k connKey
	s, d := src.Addr().As16(), dst.Addr().As16()
	copy(k[0:], s[:])
	copy(k[16:], d[:])
	k[32], k[33] = byte(src.Port()>>8), byte(src.Port())
	k[34], k[35] = byte(dst.Port()>>8), byte(dst.Port())
	return k
}

const defaultMaxConns = 8192

// New loads the programs and attaches them. On error nothing stays behind.
//
// Preconditions: the calling thread is in the network namespace whose interfaces are to be locked.
func New(opts Options) (_ *Lock, err error) {
	maxConns := opts.MaxConns
	if maxConns <= 0 {
		maxConns = defaultMaxConns
	}
	l := &Lock{}
	defer func() {
		if err != nil {
			_ = l.Release()
		}
	}()
	if l.conns, err = newMap("netlock_conns", ebpf.Hash, 36, uint32(2*maxConns)); err != nil {
		return nil, err
	}
	if l.ports, err = newMap("netlock_ports", ebpf.Hash, 2, 1024); err != nil {
		return nil, err
	}
	if l.stats, err = newMap("netlock_stats", ebpf.PerCPUArray, 4, 1); err != nil {
		return nil, err
	}
	// Fill the maps before attaching, so that the lock is complete the moment it exists.
	for _, c := range opts.Conns {
		if err := l.add(c); err != nil {
			return nil, err
		}
	}
	for _, p := range opts.LocalPorts {
		if err := l.addPort(p); err != nil {
			return nil, err
		}
	}
	for _, ingress := range []bool{true, false} {
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Name:         progName(ingress),
			Type:         ebpf.SchedCLS,
			License:      "Dual MIT/GPL",
			Instructions: program(ingress, l.conns, l.ports, l.stats, opts.PassMark),
		})
		if err != nil {
			return nil, classify("tc classifier programs", err)
		}
		l.progs = append(l.progs, p)
	}
	ifaces := opts.Interfaces
	if len(ifaces) == 0 {
		if ifaces, err = upInterfaces(); err != nil {
			return nil, err
		}
	}
	for _, name := range ifaces {
		if err := l.attach(name); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func progName(ingress bool) string {
	if ingress {
		return "netlock_in"
	}
	return "netlock_out"
}

func newMap(name string, typ ebpf.MapType, keySize, maxEntries uint32) (*ebpf.Map, error) {
	spec := &ebpf.MapSpec{Name: name, Type: typ, KeySize: keySize, ValueSize: 4, MaxEntries: maxEntries}
	if typ == ebpf.Hash {
		spec.Flags = 1 // BPF_F_NO_PREALLOC: memory only for the entries in use
	} else {
		spec.ValueSize = 8
	}
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, classify("maps", err)
	}
	return m, nil
}

func upInterfaces() ([]string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("netlock: list interfaces: %w", err)
	}
	var names []string
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagUp != 0 {
			names = append(names, ifi.Name)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("netlock: no interface is up")
	}
	return names, nil
}

func (l *Lock) attach(name string) error {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("netlock: interface %q: %w", name, err)
	}
	for i, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		lk, err := link.AttachTCX(link.TCXOptions{Interface: ifi.Index, Program: l.progs[i], Attach: at})
		if err != nil {
			if errors.Is(err, ebpf.ErrNotSupported) {
				return &UnsupportedError{Feature: "tcx links (Linux 6.6+)", Err: err}
			}
			return fmt.Errorf("netlock: attach to %s: %w", name, classify("tcx links", err))
		}
		l.links = append(l.links, lk)
	}
	return nil
}

// Add locks one more connection; packets already in flight may still pass.
func (l *Lock) Add(c Conn) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return ErrReleased
	}
	return l.add(c)
}

func (l *Lock) add(c Conn) error {
	if !c.Local.IsValid() || !c.Remote.IsValid() || c.Local.Addr().Unmap().Is4() != c.Remote.Addr().Unmap().Is4() {
		return fmt.Errorf("netlock: invalid connection %v -> %v", c.Local, c.Remote)
	}
	one := uint32(1)
	for _, k := range []connKey{keyOf(c.Local, c.Remote), keyOf(c.Remote, c.Local)} {
		if err := l.conns.Put(k, one); err != nil {
			return fmt.Errorf("netlock: add %v -> %v: %w", c.Local, c.Remote, err)
		}
	}
	return nil
}

// Remove unlocks one connection and leaves the others locked.
func (l *Lock) Remove(c Conn) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return ErrReleased
	}
	for _, k := range []connKey{keyOf(c.Local, c.Remote), keyOf(c.Remote, c.Local)} {
		if err := l.conns.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("netlock: remove %v -> %v: %w", c.Local, c.Remote, err)
		}
	}
	return nil
}

// AddPort locks every TCP packet to or from a local port.
func (l *Lock) AddPort(port uint16) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return ErrReleased
	}
	return l.addPort(port)
}

func (l *Lock) addPort(port uint16) error {
	if port == 0 {
		return fmt.Errorf("netlock: port 0")
	}
	if err := l.ports.Put(portKey{byte(port >> 8), byte(port)}, uint32(1)); err != nil {
		return fmt.Errorf("netlock: add port %d: %w", port, err)
	}
	return nil
}

// Clear unlocks every connection and port at once (a few map deletions), leaving the programs attached
// until Release. Detaching tcx programs costs milliseconds per link (the kernel patches its static keys
// and waits for RCU), so a caller in a hurry clears the lock first and releases it afterwards.
func (l *Lock) Clear() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return ErrReleased
	}
	if err := errors.Join(clearMap[connKey](l.conns), clearMap[portKey](l.ports)); err != nil {
		return fmt.Errorf("netlock: clear: %w", err)
	}
	return nil
}

// clearMap deletes every entry of a hash map with keys of type K. Keys are collected first: deleting
// while iterating a BPF hash map can make the iteration restart or skip entries.
func clearMap[K any](m *ebpf.Map) error {
	var keys []K
	var k K
	var v uint32
	it := m.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		return err
	}
	for _, k := range keys {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
	return nil
}

// Dropped returns how many packets the lock has dropped so far.
func (l *Lock) Dropped() (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return 0, ErrReleased
	}
	var per []uint64
	if err := l.stats.Lookup(uint32(0), &per); err != nil {
		return 0, fmt.Errorf("netlock: read stats: %w", err)
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}

// ErrReleased is returned by methods called after Release.
var ErrReleased = errors.New("netlock: lock released")

// Release detaches the programs and frees everything; a pinned lock is unpinned first (its directory
// removed). Links go first, so that traffic flows again before the maps disappear. Calling it again does
// nothing.
func (l *Lock) Release() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return nil
	}
	l.released = true
	err := errors.Join(l.unpin(), l.closeHandles())
	if err != nil {
		return fmt.Errorf("netlock: release: %w", err)
	}
	return nil
}

// Probe checks that this kernel and these privileges can hold a lock, by building one on lo with nothing
// to drop and taking it down again. It returns an *UnsupportedError when they cannot.
//
// Preconditions: as for New.
func Probe() error {
	l, err := New(Options{Interfaces: []string{"lo"}, MaxConns: 1})
	if err != nil {
		return err
	}
	return l.Release()
}
