package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/lazyr/lazyr/internal/kernel"
)

// optionalFeatures are reported but do not make the check fail: lazyr works around them.
var optionalFeatures = map[string]string{
	"mem_soft_dirty": "only iterative pre-dumps would need it, and lazyr has none",
}

func runCheck(ctx context.Context, args []string) int {
	fs := newFlags("check", "")
	if _, err := parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	missing := 0
	for _, f := range kernel.Probe() {
		switch {
		case f.Err == nil:
			fmt.Printf("%-18s ok\n", f.Name)
		case optionalFeatures[f.Name] != "":
			fmt.Printf("%-18s not available (optional: %s): %v\n", f.Name, optionalFeatures[f.Name], f.Err)
		default:
			fmt.Printf("%-18s MISSING: %v\n", f.Name, f.Err)
			missing++
		}
	}
	if missing > 0 {
		fmt.Fprintf(os.Stderr, "lazyr check: %d required feature(s) missing\n", missing)
		return 1
	}
	fmt.Println("Looks good.")
	return 0
}
