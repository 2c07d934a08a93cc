//go:build race

package pagesrv

// raceEnabled: the race detector slows memory copies by an order of
// magnitude, which makes throughput comparisons meaningless.
const raceEnabled = true
