//go:build race

package redisstore

// raceEnabled scales the conformance suite down under the race detector,
// which slows the client several-fold; the full sizes run without it.
const raceEnabled = true
