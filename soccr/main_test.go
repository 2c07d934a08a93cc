package soccr

import (
	"fmt"
	"os"
	"slices"
	"testing"
)

// TestMain fails the run if a test leaked a file descriptor (a socket, or a BPF object of the lock).
func TestMain(m *testing.M) {
	// Let the runtime open what it keeps open for good (the network poller's epoll and eventfd) before the
	// first snapshot: a pipe is registered with the poller.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before := fds()
	code := m.Run()
	if after := fds(); code == 0 && !slices.Equal(before, after) {
		fmt.Fprintf(os.Stderr, "leaked descriptors: before %v, after %v\n", before, after)
		code = 1
	}
	os.Exit(code)
}

func fds() []string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		panic(err)
	}
	var out []string
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			out = append(out, e.Name()+"="+target)
		}
	}
	return out
}
