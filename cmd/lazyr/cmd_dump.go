package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"go.uber.org/zap"

	"github.com/lazyr/lazyr/compel"
	"github.com/lazyr/lazyr/dump"
)

func runDump(ctx context.Context, args []string) int {
	var c common
	var pid int
	var leaveRunning, tcpEstablished, shellJob bool
	var networkLock string
	var lazy lazyDumpFlags // --lazy-pages, --address, --port, --status-fd, --tls* (cmd_pageserver.go)
	fs := newFlags("dump", "-t PID -D DIR [options]")
	c.register(fs, true, true)
	intVar(fs, &pid, "t", "tree", 0, "PID of the process to dump")
	fs.BoolVar(&leaveRunning, "leave-running", false, "let the process run on after the dump (default: kill it)")
	fs.BoolVar(&shellJob, "shell-job", false, "allow a process that uses its shell's terminal (restore it with --shell-job too)")
	fs.BoolVar(&tcpEstablished, "tcp-established", false, "dump established TCP connections (TCP repair); without it they are refused")
	fs.StringVar(&networkLock, "network-lock", dump.NetworkLockEBPF, "how the connections are held while dumped: ebpf (dropped until the restore) or skip")
	lazy.register(fs)
	if _, err := parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if pid == 0 {
		return c.fail(nil, "dump", fmt.Errorf("-t/--tree PID is required"))
	}
	if err := requireDir("-D/--images-dir", c.imagesDir); err != nil {
		return c.fail(nil, "dump", err)
	}
	log, err := c.logger()
	if err != nil {
		return c.fail(nil, "dump", err)
	}
	defer log.Sync()
	lazySrv, err := lazy.server(&c, c.imagesDir, log)
	if err != nil {
		return c.fail(log, "dump", err)
	}
	defer lazySrv.close()
	show, done := progress("dumping memory")
	st, err := dump.Run(ctx, compel.NewTracer(), dump.Options{
		Pid: pid, ImagesDir: c.imagesDir, LeaveRunning: leaveRunning, Log: log, Progress: show,
		TCPEstablished: tcpEstablished, NetworkLock: networkLock, ServeLazy: lazySrv.serveLazy(), ShellJob: shellJob,
	})
	done()
	if err != nil {
		return c.fail(log, fmt.Sprintf("dump of %d failed", pid), err)
	}
	log.Info("dump finished",
		zap.Int("pid", pid),
		zap.Uint64("pages_written", st.PagesWritten),
		zap.Uint64("pages_skipped", st.PagesSkipped),
		zap.Uint64("pages_lazy", st.PagesLazy),
		zap.Duration("freezing_time", st.FreezingTime),
		zap.Duration("frozen_time", st.FrozenTime),
		zap.Duration("memdump_time", st.MemdumpTime),
		zap.Duration("memwrite_time", st.MemwriteTime),
	)
	return 0
}
