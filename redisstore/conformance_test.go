package redisstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/storetest"
	"github.com/pushgate/pushgate/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

var hubSeq atomic.Int64

// newHub returns a name no other test of this process uses, so that tests
// sharing a server never see each other's keys.
func newHub(prefix string) string { return fmt.Sprintf("%s%d", prefix, hubSeq.Add(1)) }

func standaloneFactory(shards int) storetest.Factory {
	return func(t *testing.T, clock *storetest.Clock) hubcore.Store {
		srv := redistest.Shared(t)
		s, err := New(context.Background(), Options{
			Redis:  redis.UniversalOptions{Addrs: []string{srv.Addr}},
			Hub:    newHub("conf"),
			Shards: shards,
			Now:    clock.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

// suiteOptions are the suite's sizes: the defaults for one configuration,
// smaller ones for the others (and under the race detector), so that the
// package's tests stay within a few minutes.
func suiteOptions(full bool) storetest.Options {
	switch {
	case raceEnabled:
		return storetest.Options{Installations: 300, Registrations: 60, Expressions: 60, Paging: 60}
	case full:
		return storetest.Options{}
	default:
		return storetest.Options{Installations: 600, Registrations: 120, Expressions: 150, Paging: 120}
	}
}

func TestConformanceStandalone(t *testing.T) {
	for _, shards := range []int{1, 4} {
		t.Run(fmt.Sprintf("shards=%d", shards), func(t *testing.T) {
			storetest.RunWith(t, standaloneFactory(shards), suiteOptions(shards == 4))
		})
	}
}

func TestConformanceCluster(t *testing.T) {
	storetest.RunWith(t, func(t *testing.T, clock *storetest.Clock) hubcore.Store {
		c := redistest.SharedCluster(t)
		s, err := New(context.Background(), Options{
			Redis:  redis.UniversalOptions{Addrs: c.Addrs},
			Hub:    newHub("cluster"),
			Shards: 6,
			Now:    clock.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, suiteOptions(false))
}
