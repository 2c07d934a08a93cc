// Package integration holds the end-to-end tests of lazyr: real victim
// programs (victims/*.c, built with gcc by internal/testutil) are dumped and
// restored through the lazyr CLI, and the tests check what the victims print
// afterwards. Every victim verifies its own state (memory patterns, register
// values, file positions, pipe contents) and prints "FAIL ..." when something
// was lost, so a test passes only if the restored process continues exactly
// where it was dumped: same PID, next tick numbers, no FAIL line.
//
// The tests need root and run serially: they touch real PIDs and each takes a
// few seconds at most (victims tick every ~100 ms).
package integration
