//go:build !race

package pagesrv

const raceEnabled = false
