package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strconv"

	"go.uber.org/zap"

	"github.com/lazyr/lazyr/lazypages"
)

// lazyStatsName is where the daemon leaves its statistics (JSON) in the work dir; `lazyr show` prints it.
const lazyStatsName = "lazy-pages-stats.json"

func runLazyPages(ctx context.Context, args []string) int {
	var c common
	var daemon, noPrefetch bool
	var pidFile string
	statusFd := -1
	fs := newFlags("lazy-pages", "-D DIR -W WORKDIR [options]")
	c.register(fs, true, true)
	fs.BoolVar(&daemon, "daemon", false, "run in the background; returns once the daemon listens")
	fs.StringVar(&pidFile, "pidfile", "", "write the daemon's PID to this file")
	fs.IntVar(&statusFd, "status-fd", -1, "write a zero byte to this fd once the daemon listens")
	fs.BoolVar(&noPrefetch, "no-prefetch", false, "serve faults only, no background prefetch")
	// --page-server (remote_source.go): pages from a page server, images fetched from it if -D has none.
	var fromServer bool
	var ps pageServerFlags
	fs.BoolVar(&fromServer, "page-server", false, "read pages from the page server at --address/--port (a page-server or a dump --lazy-pages) instead of the local images; if -D holds no images, fetch them from it first")
	ps.register(fs, "with --page-server: the page server's address", "with --page-server: the page server's port")
	fs.DurationVar(&ps.wait, "connect-timeout", 0, "with --page-server: retry a refused connection for this long (start the destination before the source listens)")
	if _, err := parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := requireDir("-D/--images-dir", c.imagesDir); err != nil {
		return c.fail(nil, "lazy-pages", err)
	}
	if c.workDir == "" {
		c.workDir = c.imagesDir
	}
	if daemon {
		return daemonize(args, pidFile, statusFd)
	}
	log, err := c.logger()
	if err != nil {
		return c.fail(nil, "lazy-pages", err)
	}
	defer log.Sync()
	var remote *remoteSession
	if fromServer {
		if remote, err = openRemote(ctx, &c, &ps, c.imagesDir, log); err != nil {
			return c.fail(log, "lazy-pages", err)
		}
		ctx = remote.ctx
	}
	st, err := lazypages.Serve(ctx, lazypages.Options{
		ImagesDir: c.imagesDir,
		WorkDir:   c.workDir,
		Source:    remote.source(),
		Prefetch:  !noPrefetch,
		Ready: func() {
			log.Info("lazy-pages daemon listening", zap.String("socket", lazypages.SocketPath(c.workDir)))
			if pidFile != "" {
				if err := writeFileAtomic(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n")); err != nil {
					log.Error("pidfile", zap.Error(err))
				}
			}
			signalReady(statusFd)
		},
	})
	err = remote.finish(err)
	if st != nil && (err == nil || st.Processes > 0) { // a daemon that never started has nothing to report
		logLazyStats(log, st)
		if b, jerr := json.MarshalIndent(st, "", "  "); jerr == nil {
			if werr := writeFileAtomic(filepath.Join(c.workDir, lazyStatsName), append(b, '\n')); werr != nil {
				log.Warn("writing statistics", zap.Error(werr))
			}
		}
	}
	if err != nil {
		return c.fail(log, "lazy-pages", err)
	}
	return 0
}

func logLazyStats(log *zap.Logger, st *lazypages.Stats) {
	log.Info("lazy-pages finished",
		zap.Int("processes", st.Processes),
		zap.Uint64("faults", st.Faults),
		zap.Uint64("pages_by_fault", st.PagesByFault),
		zap.Uint64("pages_by_prefetch", st.PagesByPrefetch),
		zap.Uint64("zero_pages", st.ZeroPages),
		zap.Uint64("bytes_copied", st.BytesCopied),
		zap.Duration("fault_latency_p50", st.FaultLatencyP50),
		zap.Duration("fault_latency_p99", st.FaultLatencyP99),
		zap.Duration("fault_latency_max", st.FaultLatencyMax),
		zap.Duration("all_pages_in", st.AllPagesIn),
	)
}
