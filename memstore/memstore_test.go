package memstore_test

import (
	"testing"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/storetest"
	"github.com/pushgate/pushgate/memstore"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clock *storetest.Clock) hubcore.Store {
		s, err := memstore.Open(memstore.Options{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
