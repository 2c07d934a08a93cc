package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/lazyr/lazyr/dump"
	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/lazypages"
	"github.com/lazyr/lazyr/pagesrv"
)

// remoteSource is the lazy-pages daemon's page source when the memory is on a page server
// (lazy-pages --page-server): a pagesrv.Client. The connection is not the source's: Close leaves it
// open, because the daemon's owner still has to tell the server Done once every page is in.
type remoteSource struct{ c *pagesrv.Client }

// ReadPages reads through the client. Pages the server does not have come back zero-filled with a
// *pagesrv.NotInImageError, which matches images.ErrNotInImage as the daemon expects.
func (r remoteSource) ReadPages(pid int, addr uint64, dst []byte) error {
	return r.c.ReadPages(pid, addr, dst)
}

func (r remoteSource) Extents(pid int) ([]lazypages.Extent, error) {
	ext, err := r.c.Extents(pid)
	if err != nil {
		return nil, err
	}
	out := make([]lazypages.Extent, len(ext))
	for i, e := range ext {
		out[i] = lazypages.Extent{Addr: e.Addr, NrPages: e.NrPages}
	}
	return out, nil
}

// StartRead makes remoteSource a lazypages.AsyncSource: the daemon keeps many reads in flight on the
// one connection (the server answers them in order) and never waits for the network on its fault loop.
func (r remoteSource) StartRead(pid int, addr uint64, dst []byte, done func(error)) {
	if len(dst) > r.c.MaxRequestPages()*os.Getpagesize() {
		go func() { done(r.c.ReadPages(pid, addr, dst)) }() // split and pipelined inside
		return
	}
	// done is the daemon's cheap hand-off (a queue and an eventfd): it may run on the client's reader.
	r.c.GoFunc(pid, addr, dst, func(call *pagesrv.Call) { done(call.Err) })
}

func (r remoteSource) Close() error { return nil }

var _ lazypages.AsyncSource = remoteSource{}

// lazyDumpSource serves the memory a lazy dump keeps frozen to the page server.
type lazyDumpSource struct{ *dump.LazySource }

func (s *lazyDumpSource) Extents(pid int) ([]pagesrv.Extent, error) {
	ext, err := s.LazySource.Extents(pid)
	if err != nil {
		return nil, err
	}
	out := make([]pagesrv.Extent, len(ext))
	for i, e := range ext {
		out[i] = pagesrv.Extent{Addr: e.Addr, NrPages: e.NrPages}
	}
	return out, nil
}

// remoteSession is lazy-pages --page-server: the connection to the page server, the images fetched
// from it when -D has none, and a context that ends when the connection does, so that the daemon
// gives up (and kills what depends on it) as soon as its memory is out of reach.
type remoteSession struct {
	client *pagesrv.Client
	ctx    context.Context
	cancel context.CancelCauseFunc
	log    *zap.Logger
}

func openRemote(ctx context.Context, c *common, f *pageServerFlags, imagesDir string, log *zap.Logger) (*remoteSession, error) {
	if f.address == "" || f.port < 0 {
		return nil, errors.New("--page-server needs --address and --port")
	}
	tlsConf, err := f.clientTLS()
	if err != nil {
		return nil, err
	}
	if tlsConf == nil {
		warnPlaintext(c, log, f.address, false)
	}
	client, err := dialRetry(ctx, f, tlsConf)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			client.Close()
		}
	}()
	// inventory.img marks a complete image set (FetchImages writes it last). A complete set copied by
	// hand is used as it is; anything else is fetched now, also a set fetched before: the source may
	// have run on since (an aborted migration, retried), and only its page server knows.
	_, errInv := os.Stat(filepath.Join(imagesDir, images.InventoryName))
	_, errMark := os.Stat(filepath.Join(imagesDir, pagesrv.FetchedMark))
	if errInv == nil && errMark != nil {
		if err := sameDump(client, imagesDir); err != nil {
			return nil, err
		}
		log.Info("using the images in the images directory", zap.String("dir", imagesDir))
	} else {
		start := time.Now()
		st, err := client.FetchImages(imagesDir)
		if err != nil {
			return nil, err
		}
		log.Info("images fetched from the page server",
			zap.Int("files", st.Files), zap.Int("pagemaps", st.Pagemaps),
			zap.Uint64("pages", st.Pages), zap.Uint64("lazy_pages", st.LazyPages),
			zap.Duration("elapsed", time.Since(start)))
	}
	r := &remoteSession{client: client, log: log}
	r.ctx, r.cancel = context.WithCancelCause(ctx)
	go func() {
		select {
		case <-client.Lost():
			r.cancel(fmt.Errorf("page server %s: %w", net.JoinHostPort(f.address, strconv.Itoa(f.port)), client.Err()))
		case <-r.ctx.Done():
		}
	}()
	ok = true
	return r, nil
}

// sameDump checks that the images copied into imagesDir are the dump the page server serves the memory
// of: restored on another dump's memory, the processes would run on garbage.
func sameDump(client *pagesrv.Client, imagesDir string) error {
	files, err := client.ListFiles()
	if err != nil {
		return err
	}
	for _, f := range files {
		if f.Name != images.InventoryName {
			continue
		}
		tmp, err := os.MkdirTemp("", "lazyr-inventory-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		if err := client.FetchFile(tmp, f); err != nil {
			return err
		}
		theirs, err := images.DumpID(tmp)
		if err != nil {
			return err
		}
		ours, err := images.DumpID(imagesDir)
		if err != nil {
			return err
		}
		if !bytes.Equal(theirs, ours) {
			return fmt.Errorf("the images in %s are another dump than the one the page server serves: "+
				"empty the directory to fetch the server's images, or copy the right ones", imagesDir)
		}
		return nil
	}
	return fmt.Errorf("the page server offers no %s to compare the images in %s with", images.InventoryName, imagesDir)
}

// dialRetry dials the page server, retrying a refused connection for f.wait: a destination started
// before its source listens waits for it.
func dialRetry(ctx context.Context, f *pageServerFlags, tlsConf *tls.Config) (*pagesrv.Client, error) {
	deadline := time.Now().Add(f.wait)
	backoff := time.Millisecond
	for {
		client, err := pagesrv.Dial(ctx, f.address, f.port, tlsConf)
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || time.Now().Add(backoff).After(deadline) {
			return client, err
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil, err
		}
		// A short cap: a source that starts listening just before it freezes its process (a small one
		// is frozen and served within milliseconds) must not wait for the next knock, that is downtime.
		// A refused connect on a LAN costs a round trip and nothing else.
		backoff = min(2*backoff, 5*time.Millisecond)
	}
}

// source is the daemon's page source: nil (the local images) without --page-server.
func (r *remoteSession) source() lazypages.PageSource {
	if r == nil {
		return nil
	}
	return remoteSource{r.client}
}

// finish tells the server that every page is in place when the daemon succeeded, and closes the
// connection. Without Done the server's side (a migration source) releases its process.
func (r *remoteSession) finish(serveErr error) error {
	if r == nil {
		return serveErr
	}
	defer r.cancel(nil)
	defer r.client.Close()
	if serveErr != nil {
		return serveErr
	}
	if err := r.client.Done(); err != nil {
		return fmt.Errorf("every page is in place, but telling the page server failed (the source may run on too): %w", err)
	}
	return nil
}
