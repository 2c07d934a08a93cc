package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// common holds the options every command shares (CRIU's names).
type common struct {
	verbosity int
	logFile   string
	imagesDir string
	workDir   string
}

// newFlags makes a flag set for a command; name is used in --help.
func newFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: lazyr %s %s\n\nOptions:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// alias binds a second (long or short) name to the same variable.
func strVar(fs *flag.FlagSet, p *string, short, long, def, help string) {
	fs.StringVar(p, long, def, help)
	if short != "" {
		fs.StringVar(p, short, def, "same as --"+long)
	}
}

func intVar(fs *flag.FlagSet, p *int, short, long string, def int, help string) {
	fs.IntVar(p, long, def, help)
	if short != "" {
		fs.IntVar(p, short, def, "same as --"+long)
	}
}

func boolVar(fs *flag.FlagSet, p *bool, short, long string, help string) {
	fs.BoolVar(p, long, false, help)
	if short != "" {
		fs.BoolVar(p, short, false, "same as --"+long)
	}
}

func (c *common) register(fs *flag.FlagSet, images, work bool) {
	fs.IntVar(&c.verbosity, "v", 2, "log level: 0 errors, 1 warnings, 2 info, 3 and up debug")
	strVar(fs, &c.logFile, "o", "log-file", "", "write the log to this file (errors still go to stderr)")
	if images {
		strVar(fs, &c.imagesDir, "D", "images-dir", "", "image directory")
	}
	if work {
		strVar(fs, &c.workDir, "W", "work-dir", "", "work directory for sockets and logs (default: the images directory)")
	}
}

// parse accepts flags before and after positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func (c *common) logger() (*zap.Logger, error) {
	level := zapcore.InfoLevel
	switch {
	case c.verbosity <= 0:
		level = zapcore.ErrorLevel
	case c.verbosity == 1:
		level = zapcore.WarnLevel
	case c.verbosity >= 3:
		level = zapcore.DebugLevel
	}
	encCfg := zap.NewDevelopmentEncoderConfig()
	encCfg.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
	stderrCore := zapcore.NewCore(zapcore.NewConsoleEncoder(encCfg), zapcore.Lock(os.Stderr), level)
	if c.logFile == "" {
		return zap.New(stderrCore), nil
	}
	f, err := os.OpenFile(c.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	// Failures are printed to stderr by fail(); the file gets everything.
	return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(encCfg), zapcore.AddSync(f), level)), nil
}

// progress returns a callback that shows a progress line on a terminal once an operation has taken more
// than a second; nil when stderr is not a terminal.
func progress(what string) (func(done, total uint64), func()) {
	if _, err := unix.IoctlGetTermios(int(os.Stderr.Fd()), unix.TCGETS); err != nil {
		return nil, func() {}
	}
	start := time.Now()
	shown := false
	return func(done, total uint64) {
			if time.Since(start) < time.Second || total == 0 {
				return
			}
			shown = true
			fmt.Fprintf(os.Stderr, "\r%s: %d/%d MiB (%d%%)   ", what, done>>20, total>>20, done*100/total)
		}, func() {
			if shown {
				fmt.Fprintln(os.Stderr)
			}
		}
}

// fail reports a failed command: a plain line on stderr, and the log file if there is one.
func (c *common) fail(log *zap.Logger, msg string, err error) int {
	fmt.Fprintf(os.Stderr, "lazyr: %s: %v\n", msg, err)
	if log != nil && c.logFile != "" {
		log.Error(msg, zap.Error(err))
	}
	return 1
}

func requireDir(name, v string) error {
	if strings.TrimSpace(v) == "" {
		return fmt.Errorf("%s is required", name)
	}
	return nil
}
