package lazypages

import (
	"encoding/json"
	"math/rand"
	"slices"
	"testing"
	"time"
)

func TestHistBuckets(t *testing.T) {
	prev := -1
	for _, v := range []uint64{0, 1, 15, 16, 17, 31, 32, 33, 1000, 1 << 40, 1<<63 + 12345} {
		i := histIndex(v)
		if i < prev || i >= len(latencyHist{}.counts) {
			t.Fatalf("index %d for %d", i, v)
		}
		prev = i
		if up := histUpper(i); up < v || (v >= 16 && float64(up-v) > float64(v)/16) {
			t.Errorf("value %d in bucket %d with upper bound %d", v, i, up)
		}
		if i > 0 && histUpper(i-1) >= v {
			t.Errorf("value %d also fits bucket %d", v, i-1)
		}
	}
}

func TestHistQuantiles(t *testing.T) {
	var h latencyHist
	rng := rand.New(rand.NewSource(2))
	var vals []time.Duration
	for i := 0; i < 10000; i++ {
		v := time.Duration(rng.ExpFloat64() * float64(30*time.Microsecond))
		vals = append(vals, v)
		h.add(v)
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.99} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := h.quantile(q)
		if got < exact || float64(got-exact) > float64(exact)/16+1 {
			t.Errorf("q%.2f = %v, exact %v", q, got, exact)
		}
	}
	if h.quantile(1) != vals[len(vals)-1] || time.Duration(h.max) != vals[len(vals)-1] {
		t.Errorf("max %v, want %v", h.quantile(1), vals[len(vals)-1])
	}
	var empty latencyHist
	if empty.quantile(0.5) != 0 {
		t.Error("quantile of nothing")
	}
}

func TestStatsJSON(t *testing.T) {
	b, err := json.Marshal(Stats{Faults: 3, FaultLatencyP99: 1500})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["faults"] != 3.0 || m["fault_latency_p99_ns"] != 1500.0 {
		t.Errorf("JSON %s", b)
	}
}
