// Package testutil runs lazyr and its victim programs for integration tests
// and benchmarks.
//
// Victims are small C programs (integration/victims/*.c) built with gcc once
// and cached by content hash under os.TempDir()/lazyr-victims, so reruns do
// not compile again. The lazyr binary is built once per test binary with
// `go build ./cmd/lazyr`.
//
// A victim started with StartVictim is a child of the test process: it runs
// in its own session (no terminal), reads /dev/null, and writes stdout and
// stderr to one file that the victim itself owns (a regular file, so a
// checkpoint sees a plain file descriptor and a restore can reopen it). A
// goroutine reaps it, so a victim killed by `lazyr dump` disappears at once
// instead of staying a zombie. A restored process is not a child of the test
// (it is re-parented to init, which reaps slowly); tests follow it through
// its output file and /proc (WaitPidOutput, WaitPidGone, KillAtCleanup).
//
// Victims report corrupted state with a line starting with "FAIL"; every wait
// on output stops early with an error when such a line appears.
package testutil
