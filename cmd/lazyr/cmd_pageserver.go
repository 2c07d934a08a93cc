package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/lazyr/lazyr/dump"
	"github.com/lazyr/lazyr/pagesrv"
)

func runPageServer(ctx context.Context, args []string) int {
	var c common
	var ps pageServerFlags
	var lazy, daemon bool
	var pidFile string
	statusFd := -1
	fs := newFlags("page-server", "-D DIR --port PORT [options]")
	c.register(fs, true, false)
	ps.register(fs, "listen on this address (default: every IPv4 address)", "listen on this TCP port (0: any free port, logged)")
	fs.BoolVar(&lazy, "lazy-pages", false, "serve a lazy restore: exit once its lazy-pages daemon reports every page in place")
	fs.BoolVar(&daemon, "daemon", false, "run in the background; returns once the server listens")
	fs.StringVar(&pidFile, "pidfile", "", "write the server's PID to this file")
	fs.IntVar(&statusFd, "status-fd", -1, "write a zero byte to this fd once the server listens")
	if _, err := parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := requireDir("-D/--images-dir", c.imagesDir); err != nil {
		return c.fail(nil, "page-server", err)
	}
	if ps.port < 0 {
		return c.fail(nil, "page-server", errors.New("--port is required"))
	}
	if daemon {
		return daemonize(args, pidFile, statusFd)
	}
	log, err := c.logger()
	if err != nil {
		return c.fail(nil, "page-server", err)
	}
	defer log.Sync()
	tlsConf, err := ps.serverTLS()
	if err != nil {
		return c.fail(log, "page-server", err)
	}
	if tlsConf == nil {
		warnPlaintext(&c, log, ps.address, true)
	}
	src, err := pagesrv.NewImageSource(c.imagesDir)
	if err != nil {
		return c.fail(log, "page-server", err)
	}
	defer src.(io.Closer).Close()
	srv, err := pagesrv.NewServer(pagesrv.ServerOptions{
		Address: ps.address, Port: ps.port, TLS: tlsConf,
		Source: src, Files: c.imagesDir, SkipFile: notImage,
		ExitWhenDone: lazy,
		OnError:      func(err error) { log.Warn("page server", zap.Error(err)) },
		OnDone:       func(pid int) { log.Debug("client done", zap.Int("pid", pid)) },
	})
	if err != nil {
		return c.fail(log, "page-server", err)
	}
	log.Info("page server listening", zap.Stringer("address", srv.Addr()), zap.String("images", c.imagesDir), zap.Bool("tls", tlsConf != nil))
	if pidFile != "" {
		if err := writeFileAtomic(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n")); err != nil {
			srv.Close()
			return c.fail(log, "pidfile", err)
		}
	}
	signalReady(statusFd)
	start := time.Now()
	err = srv.Serve(ctx)
	logServerStats(log, srv.Stats(), time.Since(start))
	if err != nil {
		return c.fail(log, "page-server", err)
	}
	return 0
}

// notImage hides everything but image files (logs, statistics, sockets a user may keep in the
// directory) from page-server clients.
func notImage(name string) bool { return !strings.HasSuffix(name, ".img") }

func logServerStats(log *zap.Logger, st pagesrv.ServerStats, d time.Duration) {
	log.Info("page server finished",
		zap.Duration("served", d),
		zap.Uint64("clients", st.ClientsTotal),
		zap.Uint64("requests", st.Requests),
		zap.Uint64("pages", st.Pages),
		zap.Uint64("absent_pages", st.AbsentPages),
		zap.Uint64("files", st.Files),
		zap.Uint64("bytes_out", st.BytesOut),
		zap.Uint64("errors", st.Errors),
	)
}

// pageServerFlags are the connection options shared by page-server, dump --lazy-pages and
// lazy-pages --page-server (CRIU's names and TLS defaults).
type pageServerFlags struct {
	address string
	port    int
	tls     bool
	cacert  string
	cert    string
	key     string
	// wait: how long a client keeps retrying a refused connection (lazy-pages --connect-timeout).
	wait time.Duration
}

const (
	defaultCACert = "/etc/pki/CA/cacert.pem"
	defaultCert   = "/etc/pki/criu/cert.pem"
	defaultKey    = "/etc/pki/criu/private/key.pem"
)

func (p *pageServerFlags) register(fs *flag.FlagSet, addrHelp, portHelp string) {
	fs.StringVar(&p.address, "address", "", addrHelp)
	fs.IntVar(&p.port, "port", -1, portHelp)
	fs.BoolVar(&p.tls, "tls", false, "TLS with mutual authentication: both sides present certificates signed by the CA")
	fs.StringVar(&p.cacert, "tls-cacert", defaultCACert, "CA certificate (PEM) that signed the peer's certificate")
	fs.StringVar(&p.cert, "tls-cert", defaultCert, "this side's certificate (PEM)")
	fs.StringVar(&p.key, "tls-key", defaultKey, "this side's private key (PEM)")
}

// serverTLS returns the server's TLS configuration, nil without --tls. The CA is required: clients
// must present a certificate it signed.
func (p *pageServerFlags) serverTLS() (*tls.Config, error) {
	if !p.tls {
		return nil, nil
	}
	if p.cacert == "" {
		return nil, errors.New("--tls needs --tls-cacert to authenticate clients")
	}
	return pagesrv.TLSConfig(p.cacert, p.cert, p.key, true)
}

// clientTLS returns the client's TLS configuration, nil without --tls.
func (p *pageServerFlags) clientTLS() (*tls.Config, error) {
	if !p.tls {
		return nil, nil
	}
	if p.cacert == "" {
		return nil, errors.New("--tls needs --tls-cacert to authenticate the server")
	}
	return pagesrv.TLSConfig(p.cacert, p.cert, p.key, false)
}

// warnPlaintext warns that process memory is about to cross a network unencrypted: any address but
// a loopback one (for a server, "" means every address).
func warnPlaintext(c *common, log *zap.Logger, address string, server bool) {
	if isLoopback(address) {
		return
	}
	where := address
	if where == "" {
		where = "every address"
	}
	msg := fmt.Sprintf("warning: page server traffic on %s is not encrypted (no --tls): process memory crosses the network in clear", where)
	if server {
		msg += ", and any client that can connect may read it"
	}
	fmt.Fprintf(os.Stderr, "lazyr: %s\n", msg)
	if c.logFile != "" {
		log.Warn(msg)
	}
}

func isLoopback(address string) bool {
	if address == "localhost" {
		return true
	}
	ip := net.ParseIP(address)
	return ip != nil && ip.IsLoopback()
}

// lazyDumpServer serves the memory a lazy dump keeps frozen (dump.Options.ServeLazy), and the images
// it wrote, until the destination's lazy-pages daemon says that every page is in place. It listens
// from the start, before anything is frozen: a port in use fails the dump before the process is
// touched, and a destination daemon started early connects at once and waits for its first answer.
type lazyDumpServer struct {
	srv      *pagesrv.Server
	src      lazyDumpSource // set by serve, before the server runs
	tls      bool
	statusFd int
	log      *zap.Logger
	cancel   context.CancelCauseFunc // set by serve
	done     bool                    // the destination said Done (loop goroutine, which is serve's)
}

func newLazyDumpServer(f *pageServerFlags, tlsConf *tls.Config, imagesDir string, statusFd int, log *zap.Logger) (*lazyDumpServer, error) {
	l := &lazyDumpServer{tls: tlsConf != nil, statusFd: statusFd, log: log}
	// The server serves the directory it opens now; the dump writes into the same one.
	if err := os.MkdirAll(imagesDir, 0o700); err != nil {
		return nil, fmt.Errorf("images dir: %w", err)
	}
	srv, err := pagesrv.NewServer(pagesrv.ServerOptions{
		Address: f.address, Port: f.port, TLS: tlsConf,
		Source: &l.src, Files: imagesDir, SkipFile: notImage,
		ExitWhenDone: true,
		OnError:      func(err error) { log.Warn("page server", zap.Error(err)) },
		OnDone: func(pid int) {
			if pid == 0 {
				l.done = true
			}
		},
		OnClose: func(cs pagesrv.ClientSummary) {
			if cs.Pages && !cs.Done {
				why := "closed the connection"
				if cs.Err != nil {
					why = cs.Err.Error()
				}
				l.cancel(fmt.Errorf("destination %v left before it had every page (%s)", cs.Remote, why))
			}
		},
	})
	if err != nil {
		return nil, err
	}
	l.srv = srv
	log.Debug("page server listening", zap.Stringer("address", srv.Addr()))
	return l, nil
}

// serve is dump.Options.ServeLazy. It returns nil only after the destination's Done; a destination
// that asked for pages and then left without Done (its daemon died, the network broke) or ctx ending
// first abort the transfer, and the dump then releases the tree.
func (l *lazyDumpServer) serve(ctx context.Context, src *dump.LazySource) error {
	l.src.LazySource = src
	ctx, l.cancel = context.WithCancelCause(ctx)
	defer l.cancel(nil)
	l.log.Info("serving the dumped memory; the process stays frozen until the destination has it all",
		zap.Stringer("address", l.srv.Addr()), zap.Bool("tls", l.tls))
	signalReady(l.statusFd)
	start := time.Now()
	err := l.srv.Serve(ctx)
	logServerStats(l.log, l.srv.Stats(), time.Since(start))
	switch {
	case err != nil:
		return err
	case !l.done:
		return fmt.Errorf("%w: %w", dump.ErrLazyAborted, context.Cause(ctx))
	}
	return nil
}

// close releases the listener of a dump that failed before serving (harmless after serve).
func (l *lazyDumpServer) close() {
	if l != nil {
		l.srv.Close()
	}
}

// lazyDumpFlags are dump's --lazy-pages options.
type lazyDumpFlags struct {
	lazy     bool
	statusFd int
	ps       pageServerFlags
}

func (f *lazyDumpFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.lazy, "lazy-pages", false, "post-copy migration source: dump all but the lazy memory, keep the process frozen and serve its memory and the images on --address/--port until the destination has every page; the process is then killed (released if the transfer aborts)")
	fs.IntVar(&f.statusFd, "status-fd", -1, "with --lazy-pages: write a zero byte to this fd once the images are written and the memory is served")
	f.ps.register(fs, "with --lazy-pages: listen on this address (default: every IPv4 address)", "with --lazy-pages: listen on this TCP port (0: any free port, logged)")
}

// server starts listening for --lazy-pages (nil without it); its serve method is dump.Options.ServeLazy.
func (f *lazyDumpFlags) server(c *common, imagesDir string, log *zap.Logger) (*lazyDumpServer, error) {
	if !f.lazy {
		return nil, nil
	}
	if f.ps.port < 0 {
		return nil, errors.New("--lazy-pages needs --port")
	}
	tlsConf, err := f.ps.serverTLS()
	if err != nil {
		return nil, err
	}
	if tlsConf == nil {
		warnPlaintext(c, log, f.ps.address, true)
	}
	return newLazyDumpServer(&f.ps, tlsConf, imagesDir, f.statusFd, log)
}

// serveLazy is the dump option: nil without --lazy-pages.
func (l *lazyDumpServer) serveLazy() func(context.Context, *dump.LazySource) error {
	if l == nil {
		return nil
	}
	return l.serve
}
