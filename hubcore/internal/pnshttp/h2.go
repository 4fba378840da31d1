package pnshttp

import (
	"context"
	"errors"
	"net/http"
	"strings"
)

// AwaitSettings makes one small request on a new HTTP/2 connection and
// waits for its answer, whatever it is. A server's SETTINGS frame precedes
// its first answer, so afterwards the client knows how many streams the
// server allows. Until then the client assumes a default that may be
// higher: a burst of first requests would open streams the server refuses,
// and one that took its stream before the SETTINGS but wrote it after
// acknowledging them is a protocol error (RST_STREAM with PROTOCOL_ERROR),
// which, unlike a refusal, is not safe to resend. A real request cannot
// serve as the probe: everyone would wait for it, however slow it is.
//
// base is "https://host:port"; the request is a HEAD of "/", which push
// services answer with a 404 or 405 without doing anything.
func AwaitSettings(ctx context.Context, cc *http.ClientConn, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, base+"/", nil)
	if err != nil {
		return err
	}
	resp, err := cc.RoundTrip(req)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// Unprocessed reports whether err says the server provably never saw the
// request, so that sending it again is safe: a RST_STREAM with
// REFUSED_STREAM (RFC 9113 §8.7), or the client's own refusal to use a
// connection that failed or is going away. net/http exposes these HTTP/2
// errors only as text or through an unexported type.
func Unprocessed(err error) bool {
	var se streamError
	if errors.As(err, &se) {
		return se.Code == errCodeRefusedStream
	}
	s := err.Error()
	return strings.Contains(s, "REFUSED_STREAM") ||
		strings.Contains(s, "client conn not usable") ||
		strings.Contains(s, "graceful shutdown GOAWAY") ||
		strings.Contains(s, "client conn could not be established")
}

// streamError has the shape of net/http's HTTP/2 stream error, which
// errors.As fills in field by field (the bundled type is unexported).
type streamError struct {
	StreamID uint32
	Code     uint32
	Cause    error
}

func (e streamError) Error() string { return "http2 stream error" }

const errCodeRefusedStream = 0x7
