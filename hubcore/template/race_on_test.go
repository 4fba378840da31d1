//go:build race

package template

// raceEnabled: the race detector changes allocation behaviour, so
// allocation-count assertions are skipped under it.
const raceEnabled = true
