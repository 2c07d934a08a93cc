package netlock

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// DefaultBPFFS is where the BPF filesystem is conventionally mounted.
const DefaultBPFFS = "/sys/fs/bpf"

// Names of the pinned objects inside a pin directory.
const (
	pinConns = "conns"
	pinPorts = "ports"
	pinStats = "stats"
	// Links are pinned as "link-<n>"; their order does not matter.
	pinLinkPrefix = "link-"
)

// MountBPFFS makes sure a BPF filesystem is mounted at dir, mounting one there (mode 0700) if dir is not one
// already. dir is created if missing.
func MountBPFFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("netlock: create %s: %w", dir, err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("netlock: mount bpffs on %s: %w", dir, err)
	}
	return nil
}

// Pin makes the lock outlive this process: its maps and links are pinned as files in dir, a directory on a
// BPF filesystem (created; it must not hold a lock already). From then on Close lets go of this process's
// handles and leaves the lock in force; LoadPinned(dir) gets it back, and its Release removes the pins and
// the directory. On error nothing stays pinned.
func (l *Lock) Pin(dir string) (err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return ErrReleased
	}
	if l.pinDir != "" {
		return fmt.Errorf("netlock: already pinned at %s", l.pinDir)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("netlock: pin directory: %w", err)
	}
	type pinner interface {
		Pin(string) error
		Unpin() error
	}
	var pinned []pinner
	defer func() {
		if err != nil {
			for _, p := range pinned {
				_ = p.Unpin()
			}
			_ = os.Remove(dir)
		}
	}()
	pin := func(p pinner, name string) error {
		if err := p.Pin(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("netlock: pin %s in %s: %w", name, dir, err)
		}
		pinned = append(pinned, p)
		return nil
	}
	for name, m := range map[string]*ebpf.Map{pinConns: l.conns, pinPorts: l.ports, pinStats: l.stats} {
		if err := pin(m, name); err != nil {
			return err
		}
	}
	for i, lk := range l.links {
		if err := pin(lk, fmt.Sprintf("%s%d", pinLinkPrefix, i)); err != nil {
			return err
		}
	}
	l.pinDir = dir
	return nil
}

// PinDir returns the directory the lock is pinned in, or "" when it is not pinned.
func (l *Lock) PinDir() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pinDir
}

// LoadPinned opens a lock pinned by Pin in dir. The error wraps fs.ErrNotExist when dir holds no lock.
func LoadPinned(dir string) (_ *Lock, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("netlock: pinned lock: %w", err)
	}
	l := &Lock{pinDir: dir}
	defer func() {
		if err != nil {
			l.closeHandles()
		}
	}()
	maps := map[string]**ebpf.Map{pinConns: &l.conns, pinPorts: &l.ports, pinStats: &l.stats}
	for name, dst := range maps {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if err != nil {
			return nil, fmt.Errorf("netlock: pinned map %s: %w", filepath.Join(dir, name), err)
		}
		*dst = m
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), pinLinkPrefix) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, name := range names {
		lk, err := link.LoadPinnedLink(filepath.Join(dir, name), nil)
		if err != nil {
			return nil, fmt.Errorf("netlock: pinned link %s: %w", filepath.Join(dir, name), err)
		}
		l.links = append(l.links, lk)
	}
	if len(l.links) == 0 {
		return nil, fmt.Errorf("netlock: %s holds no attached lock: %w", dir, fs.ErrNotExist)
	}
	return l, nil
}

// Close lets go of this process's handles on the lock. A pinned lock stays in force (see Pin); an unpinned
// one has nothing else holding it and is released. Calling it again, or after Release, does nothing.
func (l *Lock) Close() error {
	l.mu.Lock()
	pinned := l.pinDir != ""
	l.mu.Unlock()
	if !pinned {
		return l.Release()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return nil
	}
	l.released = true
	return l.closeHandles()
}

// unpin removes every pin of a pinned lock and its directory, links first so that traffic flows again
// before the maps go. Called with l.mu held.
func (l *Lock) unpin() error {
	if l.pinDir == "" {
		return nil
	}
	var errs []error
	for _, lk := range l.links {
		if err := lk.Unpin(); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for _, m := range []*ebpf.Map{l.conns, l.ports, l.stats} {
		if m != nil {
			if err := m.Unpin(); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if err := os.Remove(l.pinDir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	l.pinDir = ""
	return errors.Join(errs...)
}

// closeHandles closes every descriptor the lock holds, links first. Called with l.mu held (or before the
// lock is shared).
func (l *Lock) closeHandles() error {
	var errs []error
	for _, lk := range l.links {
		errs = append(errs, lk.Close())
	}
	for _, p := range l.progs {
		errs = append(errs, p.Close())
	}
	for _, m := range []*ebpf.Map{l.conns, l.ports, l.stats} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	l.links, l.progs, l.conns, l.ports, l.stats = nil, nil, nil, nil, nil
	return errors.Join(errs...)
}
