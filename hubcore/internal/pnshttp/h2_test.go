package pnshttp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestAwaitSettings: after AwaitSettings the client holds the server's
// stream limit, lower than the default it assumes before the SETTINGS.
func TestAwaitSettings(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusMethodNotAllowed)
	}))
	srv.EnableHTTP2 = true
	srv.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 3}
	srv.StartTLS()
	defer srv.Close()
	tr := srv.Client().Transport.(*http.Transport).Clone()
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	cc, err := tr.NewClientConn(context.Background(), "https", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if err := AwaitSettings(context.Background(), cc, srv.URL); err != nil {
		t.Fatal(err)
	}
	if got := cc.Available(); got != 3 {
		t.Fatalf("%d streams available after the probe; want the server's 3", got)
	}
}

func TestUnprocessed(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{errors.New("http2: client conn not usable"), true},
		{fmt.Errorf("post: %w", errors.New("stream error: stream ID 3; REFUSED_STREAM")), true},
		{errors.New("stream error: stream ID 3; PROTOCOL_ERROR; received from peer"), false},
		{errors.New("http2: server sent GOAWAY and closed the connection; LastStreamID=1, ErrCode=NO_ERROR"), false},
		{context.DeadlineExceeded, false},
	} {
		if got := Unprocessed(tc.err); got != tc.want {
			t.Errorf("Unprocessed(%q) = %v; want %v", tc.err, got, tc.want)
		}
	}
}
