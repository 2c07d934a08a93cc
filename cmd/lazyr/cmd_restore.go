package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"

	"go.uber.org/zap"

	"github.com/lazyr/lazyr/compel"
	"github.com/lazyr/lazyr/restore"
)

func runRestore(ctx context.Context, args []string) int {
	var c common
	var detach, lazy, tcpEstablished, shellJob bool
	var networkLock string
	var pidFile string
	fs := newFlags("restore", "-D DIR [options]")
	c.register(fs, true, true)
	boolVar(fs, &detach, "d", "restore-detached", "return once the process runs instead of waiting for it to exit")
	fs.BoolVar(&lazy, "lazy-pages", false, "leave private memory to the lazy-pages daemon (start 'lazyr lazy-pages' first)")
	fs.StringVar(&pidFile, "pidfile", "", "write the restored process's PID to this file")
	fs.BoolVar(&shellJob, "shell-job", false, "give a process dumped with --shell-job this terminal, session and process group")
	fs.BoolVar(&tcpEstablished, "tcp-established", false, "restore established TCP connections dumped with --tcp-established")
	fs.StringVar(&networkLock, "network-lock", restore.NetworkLockEBPF, "lock the connections until they are restored: ebpf or skip (a lock the dump left is released either way)")
	if _, err := parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := requireDir("-D/--images-dir", c.imagesDir); err != nil {
		return c.fail(nil, "restore", err)
	}
	if c.workDir == "" {
		c.workDir = c.imagesDir
	}
	log, err := c.logger()
	if err != nil {
		return c.fail(nil, "restore", err)
	}
	defer log.Sync()
	show, done := progress("restoring memory")
	res, err := restore.Run(ctx, compel.NewTracer(), restore.Options{
		ImagesDir: c.imagesDir, WorkDir: c.workDir, Detached: detach, LazyPages: lazy, Log: log, Progress: show,
		TCPEstablished: tcpEstablished, NetworkLock: networkLock, ShellJob: shellJob,
	})
	done()
	if err != nil {
		return c.fail(log, "restore failed", err)
	}
	log.Info("restored",
		zap.Int("pid", res.Pid),
		zap.Duration("restore_time", res.Stats.RestoreTime),
		zap.Duration("forking_time", res.Stats.ForkingTime),
		zap.Duration("memory_time", res.Stats.MemoryTime),
		zap.Uint64("pages_restored", res.Stats.PagesRestored),
		zap.Uint64("pages_lazy", res.Stats.PagesLazy),
	)
	if pidFile != "" {
		if err := writeFileAtomic(pidFile, []byte(strconv.Itoa(res.Pid)+"\n")); err != nil {
			return c.fail(log, "pidfile", err)
		}
	}
	if detach {
		return 0
	}
	code, err := restore.Wait(res.Pid)
	if err != nil {
		return c.fail(log, fmt.Sprintf("waiting for %d", res.Pid), err)
	}
	log.Debug("restored process exited", zap.Int("pid", res.Pid), zap.Int("code", code))
	return code
}
