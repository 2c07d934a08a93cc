package pagesrv

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestMappedReplies: reads whose pages are all in the mapped pages files are answered from the
// mappings themselves (serveMapped), in one reply even when the pages come from the child image and
// its parent; many such replies in flight, interleaved with replies the usual way (a partial range,
// answered with runs from a pool buffer), all come back right, and the mapped bytes never reach the
// buffer pool (a pool buffer handed out again would be written to). Over TLS the pages are read into
// buffers instead (see TestTruncatedImage).
func TestMappedReplies(t *testing.T) {
	t.Run("tcp", func(t *testing.T) { testMappedReplies(t, false) })
	t.Run("tls", func(t *testing.T) { testMappedReplies(t, true) })
}

// serveSource starts a server of src, over TLS or plain TCP, and returns a client connected to it.
func serveSource(t *testing.T, src Source, withTLS bool) *Client {
	opts, copts := ServerOptions{Source: src}, ClientOptions{}
	if withTLS {
		p := newPKI(t)
		opts.TLS, copts.TLS = p.serverConfig(t), p.clientConfig(t, p.clientCert, p.clientKey)
	}
	ts := startServer(t, opts)
	return dialT(t, ts.port, copts)
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
	c := serveSource(t, src, withTLS)

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

// TestTruncatedImage: a pages file truncated while the server has it mapped costs the reads of the lost
// pages an error (or, on plain TCP where the kernel reads the mapping, the connection), never the server
// itself: nothing in the server reads a mapping in user space, where a page beyond the end of the file
// is SIGBUS.
func TestTruncatedImage(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		name := map[bool]string{false: "tcp", true: "tls"}[withTLS]
		t.Run(name, func(t *testing.T) {
			dir, want := writeImages(t)
			src, err := NewImageSource(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer src.(io.Closer).Close()
			c := serveSource(t, src, withTLS)
			// The child's pages are mapped by the first read; then its pages file loses them.
			got := make([]byte, pg(1))
			if err := c.ReadPages(10, base, got); err != nil || !bytes.Equal(got, want[base]) {
				t.Fatalf("read before truncation: %v", err)
			}
			pages, _ := filepath.Glob(filepath.Join(dir, "pages-*.img"))
			if len(pages) != 1 {
				t.Fatalf("pages files in %s: %v", dir, pages)
			}
			if err := os.Truncate(pages[0], 0); err != nil {
				t.Fatal(err)
			}
			if err := c.ReadPages(10, base+pg(20), make([]byte, pg(2))); err == nil {
				t.Fatal("read of truncated pages succeeded")
			}
			if !withTLS {
				return // the failed writev may have cost the connection
			}
			// An error reply: the connection goes on, and the parent image is intact.
			if err := c.ReadPages(10, base+pg(1), got); err != nil || !bytes.Equal(got, want[base+pg(1)]) {
				t.Fatalf("read after the failed one: %v", err)
			}
		})
	}
}
