package main

import (
	"context"
	"fmt"
)

func runCheck(ctx context.Context, args []string) int {
	fmt.Println("check: not wired yet")
	return 1
}
