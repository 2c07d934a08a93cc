package lazypages

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

func TestExpLatency(t *testing.T) {
	pages := 65536
	if s := os.Getenv("EXP_PAGES"); s != "" {
		pages, _ = strconv.Atoi(s)
	}
	reps := 3
	if s := os.Getenv("EXP_REPS"); s != "" {
		reps, _ = strconv.Atoi(s)
	}
	for rep := 0; rep < reps; rep++ {
		v := startVictim(t, pages, "read")
		dir := t.TempDir()
		writeImage(t, dir, v.pid, []Extent{{Addr: v.addr, NrPages: uint64(pages)}}, nil)
		work, res := startDaemon(t, Options{ImagesDir: dir, Prefetch: os.Getenv("EXP_NOPF") == ""})
		c := dial(t, work)
		v.handOver(t, c)
		c.Done()
		start := time.Now()
		v.send(t, "GO")
		v.expect(t, "SUM")
		el := time.Since(start)
		v.wait(t, 10*time.Second)
		r := waitServe(t, res)
		if r.err != nil {
			t.Fatal(r.err)
		}
		st := r.stats
		fmt.Printf("RESULT %s %.1fms faults %d p50 %.1f p99 %.1f max %.1f\n", os.Getenv("EXP_TAG"), float64(el.Microseconds())/1000, st.Faults, us(st.FaultLatencyP50), us(st.FaultLatencyP99), us(st.FaultLatencyMax))
	}
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }
