package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/lazyr/lazyr/images"
)

func runShow(ctx context.Context, args []string) int {
	var c common
	var summary bool
	fs := newFlags("show", "[--summary] DIR|FILE")
	fs.BoolVar(&summary, "summary", false, "print a short human summary of an image directory")
	pos, err := parse(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if len(pos) != 1 {
		fs.Usage()
		return 2
	}
	st, err := os.Stat(pos[0])
	if err != nil {
		return c.fail(nil, "show", err)
	}
	if st.IsDir() {
		d, err := images.Open(pos[0])
		if err != nil {
			return c.fail(nil, "show", err)
		}
		s, err := images.Summarize(d)
		if err != nil {
			return c.fail(nil, "show", err)
		}
		if summary {
			if err := s.WriteText(os.Stdout); err != nil {
				return c.fail(nil, "show", err)
			}
			return 0
		}
		return printJSON(&c, s)
	}
	if summary {
		return c.fail(nil, "show", fmt.Errorf("--summary needs an image directory"))
	}
	img, err := images.DecodeFile(pos[0])
	if err != nil {
		return c.fail(nil, "show", err)
	}
	return printJSON(&c, img)
}

func printJSON(c *common, v any) int {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return c.fail(nil, "show", err)
	}
	os.Stdout.Write(append(b, '\n'))
	return 0
}
