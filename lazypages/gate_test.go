package lazypages

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Workers and the loop never overlap in the gate, whether the holder is
// quick (both sides spin) or slow (both sides sleep), and nobody hangs.
func TestGateExcludes(t *testing.T) {
	for _, hold := range []time.Duration{0, 2 * writerSpin} {
		var g gate
		var inside atomic.Int32 // workers inside
		var loop atomic.Bool    // the loop inside
		var bad atomic.Int32
		var entries, locks atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					g.enter()
					inside.Add(1)
					if loop.Load() {
						bad.Add(1)
					}
					entries.Add(1)
					if hold > 0 && entries.Load()%50 == 0 {
						time.Sleep(hold) // a slow piece: the loop must sleep
					}
					inside.Add(-1)
					g.leave()
				}
			}()
		}
		loopDone := make(chan struct{})
		go func() {
			defer close(loopDone)
			deadline := time.Now().Add(300 * time.Millisecond)
			for time.Now().Before(deadline) {
				g.lock()
				loop.Store(true)
				if inside.Load() != 0 {
					bad.Add(1)
				}
				if hold > 0 && locks.Load()%20 == 0 {
					time.Sleep(hold) // a slow turn: workers must sleep
				}
				loop.Store(false)
				g.unlock()
				locks.Add(1)
			}
		}()
		// A lost wake-up shows as a side that stops moving.
		select {
		case <-loopDone:
		case <-time.After(20 * time.Second):
			t.Fatalf("hold %v: the loop is stuck in the gate (%d locks, %d entries, readers %d)", hold, locks.Load(), entries.Load(), g.readers.Load())
		}
		close(stop)
		workersDone := make(chan struct{})
		go func() { wg.Wait(); close(workersDone) }()
		select {
		case <-workersDone:
		case <-time.After(20 * time.Second):
			t.Fatalf("hold %v: workers stuck in the gate", hold)
		}
		if bad.Load() != 0 {
			t.Errorf("hold %v: the loop and workers were inside together %d times", hold, bad.Load())
		}
		if entries.Load() == 0 || locks.Load() == 0 {
			t.Errorf("hold %v: %d entries, %d locks: one side starved", hold, entries.Load(), locks.Load())
		}
		if g.readers.Load() != 0 || g.writer.Load() {
			t.Errorf("gate not idle afterwards: readers %d writer %v", g.readers.Load(), g.writer.Load())
		}
	}
}

// Once the loop asks, workers wait for it, even if they keep coming back.
func TestGateLoopHasPriority(t *testing.T) {
	var g gate
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				g.enter()
				time.Sleep(50 * time.Microsecond)
				g.leave()
			}
		}()
	}
	time.Sleep(10 * time.Millisecond)
	start := time.Now()
	for range 100 {
		g.lock()
		g.unlock()
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("100 locks took %v with busy workers", el)
	}
	close(stop)
	wg.Wait()
}
