// Command goprog is a test victim that exercises the Go runtime: many
// threads, timers (the netpoller's epoll fd and its eventfd), futexes,
// signals, channels and the garbage collector.
//
// Usage: goprog [workers=4]
//
// Worker i computes a hash chain, h_0 = sha256("go-<i>"), h_(n+1) =
// sha256(h_n || n as 8 bytes big-endian), one step per tick of its own
// time.Ticker (100 ms), and sends "go <i> tick <n> h=<first 16 hex digits of
// h_n>" to a printer goroutine, so the test can recompute every value. A
// checker goroutine keeps a map of 100 000 entries and a 4 MiB slice whose
// contents are pure functions of their keys and indexes, verifies both
// every tick, allocates garbage and runs runtime.GC every tenth tick.
// SIGUSR1 (signal.Notify) is counted and reported.
//
// Every line goes out with one write to fd 1. A corrupted state prints a
// line starting with "FAIL" and exits with 1.
//
// Output: goprog pid=<pid> workers=<N> gomaxprocs=<P>
//
//	go <i> tick <n> h=<hex16>
//	check tick <n> ok
//	signal usr1 count=<k>
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

func main() {
	workers := 4
	if len(os.Args) > 1 {
		n, err := strconv.Atoi(os.Args[1])
		if err != nil || n < 1 {
			fmt.Fprintln(os.Stderr, "usage: goprog [workers]")
			os.Exit(2)
		}
		workers = n
	}
	lines := make(chan string, 64)
	say(fmt.Sprintf("goprog pid=%d workers=%d gomaxprocs=%d", os.Getpid(), workers, runtime.GOMAXPROCS(0)))

	for i := range workers {
		go worker(i, lines)
	}
	go checker(lines)

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1)
	count := 0
	for {
		select {
		case l := <-lines:
			say(l)
		case <-sigs:
			count++
			say(fmt.Sprintf("signal usr1 count=%d", count))
		}
	}
}

// say writes one line with one write(2).
func say(line string) {
	if _, err := os.Stdout.Write([]byte(line + "\n")); err != nil {
		os.Exit(3)
	}
}

func fail(format string, args ...any) {
	say("FAIL " + fmt.Sprintf(format, args...))
	os.Exit(1)
}

func worker(i int, lines chan<- string) {
	h := sha256.Sum256([]byte(fmt.Sprintf("go-%d", i)))
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var buf [sha256.Size + 8]byte
	for n := uint64(0); ; n++ {
		lines <- fmt.Sprintf("go %d tick %d h=%s", i, n, hex.EncodeToString(h[:8]))
		copy(buf[:], h[:])
		binary.BigEndian.PutUint64(buf[sha256.Size:], n)
		h = sha256.Sum256(buf[:])
		<-tick.C
	}
}

func mapValue(k int) uint64 { return uint64(k)*0x9E3779B97F4A7C15 ^ 0x5eed }

func sliceValue(i int) uint64 { return uint64(i)*0xD1B54A32D192ED03 + 7 }

func checker(lines chan<- string) {
	m := make(map[int]uint64, 100000)
	for k := range 100000 {
		m[k*3] = mapValue(k * 3)
	}
	s := make([]uint64, 4<<20/8)
	for i := range s {
		s[i] = sliceValue(i)
	}
	var garbage [][]byte
	for n := 0; ; n++ {
		if len(m) != 100000 {
			fail("check tick %d: map has %d entries", n, len(m))
		}
		for k, v := range m {
			if k%3 != 0 || v != mapValue(k) {
				fail("check tick %d: map[%d] = %#x, want %#x", n, k, v, mapValue(k))
			}
		}
		for i, v := range s {
			if v != sliceValue(i) {
				fail("check tick %d: slice[%d] = %#x, want %#x", n, i, v, sliceValue(i))
			}
		}
		garbage = append(garbage, make([]byte, 256<<10))
		if len(garbage) > 16 {
			garbage = garbage[:0]
		}
		if n%10 == 9 {
			runtime.GC()
		}
		lines <- fmt.Sprintf("check tick %d ok", n)
		time.Sleep(100 * time.Millisecond)
	}
}
