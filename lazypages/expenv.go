package lazypages

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

func schedstat() [3]uint64 {
	var v [3]uint64
	b, _ := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/schedstat", unix.Gettid()))
	fmt.Sscan(string(b), &v[0], &v[1], &v[2])
	return v
}

// TEMPORARY experiment knobs.
func expInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}
