package netlock

import (
	"net/netip"
	"path/filepath"
	"testing"
)

// BenchmarkNewRelease measures taking and releasing a lock on lo with one connection: the cost a dump
// adds before the freeze (New) and at give-back (Release).
func BenchmarkNewRelease(b *testing.B) {
	enterNetns(b)
	c := Conn{Local: netip.MustParseAddrPort("127.0.0.1:5000"), Remote: netip.MustParseAddrPort("127.0.0.1:40000")}
	for b.Loop() {
		l, err := New(Options{Conns: []Conn{c}, Interfaces: []string{"lo"}})
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Release(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPinLoadRelease measures the hand-over between a dump and a restore: Pin and Close in the
// dump, LoadPinned and Release in the restore (New excluded).
func BenchmarkPinLoadRelease(b *testing.B) {
	enterNetns(b)
	dir := filepath.Join(privateBPFFS(b), "lock")
	c := Conn{Local: netip.MustParseAddrPort("127.0.0.1:5000"), Remote: netip.MustParseAddrPort("127.0.0.1:40000")}
	for b.Loop() {
		b.StopTimer()
		l, err := New(Options{Conns: []Conn{c}, Interfaces: []string{"lo"}})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := l.Pin(dir); err != nil {
			b.Fatal(err)
		}
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
		l2, err := LoadPinned(dir)
		if err != nil {
			b.Fatal(err)
		}
		if err := l2.Release(); err != nil {
			b.Fatal(err)
		}
	}
}
