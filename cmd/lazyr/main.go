// Command lazyr checkpoints and restores Linux processes, lazily: see README.md.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/lazyr/lazyr/lazypages"
)

type command struct {
	summary string
	run     func(ctx context.Context, args []string) int
}

var commands = map[string]command{
	"dump":       {"checkpoint a running process into an image directory", runDump},
	"restore":    {"restore a process from an image directory", runRestore},
	"show":       {"print images as JSON, or a summary of an image directory", runShow},
	"check":      {"check the kernel features lazyr needs", runCheck},
	"lazy-pages": {"serve the memory of lazily restored processes (daemon)", runLazyPages},

	"page-server": {"serve the memory and images of an image directory to a remote lazy restore", runPageServer},
}

func usage() {
	fmt.Fprintf(os.Stderr, "Usage: lazyr COMMAND [OPTIONS]\n\nCommands:\n")
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(os.Stderr, "\nRun 'lazyr COMMAND --help' for the options of a command.\n")
}

func main() {
	if len(os.Args) > 1 && hiddenCommand(os.Args[1]) {
		return
	}
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "lazyr: unknown command %q\n\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cmd.run(ctx, os.Args[2:])
	stop()
	os.Exit(code)
}

// hiddenCommand runs internal helper modes (re-executions of lazyr itself); true if it handled one.
func hiddenCommand(name string) bool {
	if lazypages.IsGuard(os.Args) {
		os.Exit(lazypages.GuardMain())
	}
	return false
}
