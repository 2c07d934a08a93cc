package pagesrv

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// TestMappedReplies: reads whose pages are all in the mapped pages files are answered from the
// mappings themselves (serveMapped), in one reply even when the pages come from the child image and
// its parent; many such replies in flight, interleaved with replies the usual way (a partial range,
// answered with runs from a pool buffer), all come back right, and the mapped bytes never reach the
// buffer pool (a pool buffer handed out again would be written to). Over TLS the mapped bytes are
// encrypted into records instead.
func TestMappedReplies(t *testing.T) {
	t.Run("tcp", func(t *testing.T) { testMappedReplies(t, false) })
	t.Run("tls", func(t *testing.T) { testMappedReplies(t, true) })
}

func testMappedReplies(t *testing.T, withTLS bool) {
	dir, want := writeImages(t)
	src, err := NewImageSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.(io.Closer).Close()
	if _, ok := src.(MappedSource); !ok {
		t.Fatal("the image source is not a MappedSource")
	}
	opts, copts := ServerOptions{Source: src}, ClientOptions{}
	if withTLS {
		p := newPKI(t)
		opts.TLS, copts.TLS = p.serverConfig(t), p.clientConfig(t, p.clientCert, p.clientKey)
	}
	ts := startServer(t, opts)
	c := dialT(t, ts.port, copts)

	type read struct{ first, n int }
	reads := []read{
		{0, 4},  // child page 0 and parent pages 1..3: two mappings, one reply
		{0, 22}, // partly not in the image: runs, the usual way
		{8, 2},  // parent only
		{4, 2},  // PE_LAZY only: not in the image at all
		{20, 2}, // child only
		{19, 3}, // the page before the child's run is missing
		{1, 3},  // parent
		{21, 1}, // child
	}
	// Many of each in flight at once.
	for range 3 {
		reads = append(reads, reads...)
	}
	zero := make([]byte, pageSize)
	for round := range 20 {
		done := make(chan *Call, len(reads))
		for _, r := range reads {
			c.Go(10, base+pg(r.first), make([]byte, pg(r.n)), done)
		}
		for range reads {
			call := <-done
			var nie *NotInImageError
			if call.Err != nil && !errors.As(call.Err, &nie) {
				t.Fatalf("round %d: read at %#x: %v", round, call.Addr, call.Err)
			}
			for i := 0; i < len(call.Dst)/pageSize; i++ {
				w, ok := want[call.Addr+pg(i)]
				if !ok {
					w = zero
				}
				if !bytes.Equal(call.Dst[pg(i):pg(i+1)], w) {
					t.Fatalf("round %d: read at %#x: page %d wrong", round, call.Addr, i)
				}
			}
		}
	}
}
