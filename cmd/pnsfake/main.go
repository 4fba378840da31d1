// Command pnsfake serves the strict push-service fakes (APNs and FCM HTTP
// v1) on loopback, for benchmarks and manual tests: pushgate, h2load and
// curl can all be pointed at the same fake. It writes what a client needs
// (URLs, the TLS certificates, an APNs signing key, an FCM service-account
// key file, ready-made bearer tokens for h2load) into -dir, and prints the
// accepted and refused counts every -every.
//
//	go run ./cmd/pnsfake -dir /tmp/pnsfake
//
// Only loopback addresses are accepted.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/pushgate/pushgate/internal/pnsfake"
	apnsfake "github.com/pushgate/pushgate/internal/pnsfake/apns"
	fcmfake "github.com/pushgate/pushgate/internal/pnsfake/fcm"
)

// Info is what pnsfake writes to <dir>/info.json.
type Info struct {
	APNSURL string `json:"apns_url"`
	FCMURL  string `json:"fcm_url"`
	// CAFile holds both fakes' certificates (PEM).
	CAFile string `json:"ca_file"`
	// APNs provider-token credential.
	APNSKeyFile string `json:"apns_key_file"`
	APNSKeyID   string `json:"apns_key_id"`
	APNSTeamID  string `json:"apns_team_id"`
	APNSTopic   string `json:"apns_topic"`
	// APNSBearer is a provider token valid for an hour (h2load's header).
	APNSBearer string `json:"apns_bearer"`
	// FCMCredentialsFile is a service-account key file of FCMProject whose
	// token_uri is the fake's.
	FCMCredentialsFile string `json:"fcm_credentials_file"`
	FCMProject         string `json:"fcm_project"`
	// FCMBearer is an access token from the fake's token endpoint.
	FCMBearer string `json:"fcm_bearer"`
}

func main() {
	var (
		dir       = flag.String("dir", "", "directory for info.json and the credentials (required)")
		apnsAddr  = flag.String("apns", "127.0.0.1:0", "loopback address of the fake APNs")
		fcmAddr   = flag.String("fcm", "127.0.0.1:0", "loopback address of the fake FCM")
		every     = flag.Duration("every", 5*time.Second, "how often to print counts (0: never)")
		slowAPNS  = flag.Duration("apns-delay", 0, "answer every APNs request after this delay")
		streamsMx = flag.Int("streams", 1000, "SETTINGS_MAX_CONCURRENT_STREAMS of both fakes")
	)
	flag.Parse()
	if err := run(*dir, *apnsAddr, *fcmAddr, *every, *slowAPNS, *streamsMx); err != nil {
		fmt.Fprintln(os.Stderr, "pnsfake:", err)
		os.Exit(1)
	}
}

func listenLoopback(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("%q is not a loopback address", addr)
	}
	return net.Listen("tcp", addr)
}

func run(dir, apnsAddr, fcmAddr string, every, slow time.Duration, streams int) error {
	if dir == "" {
		return fmt.Errorf("-dir is required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	info := Info{APNSKeyID: "PNSFAKEKEY", APNSTeamID: "PNSFAKETEA", APNSTopic: "com.example.pushgate", FCMProject: "pnsfake-project"}
	p8, pub, err := apnsfake.GenerateKey()
	if err != nil {
		return err
	}
	ap := apnsfake.New(apnsfake.Options{
		Keys:                 map[string]apnsfake.Key{info.APNSKeyID: {TeamID: info.APNSTeamID, Public: pub}},
		Topics:               map[string][]string{info.APNSTeamID: {info.APNSTopic}},
		MaxConcurrentStreams: streams,
	})
	if slow > 0 {
		ap.Script.SetDefault(pnsfake.Action{Kind: pnsfake.Slow, Delay: slow})
	}
	fc := fcmfake.New(fcmfake.Options{MaxConcurrentStreams: streams})
	for _, s := range []struct {
		addr  string
		serve func(net.Listener) error
	}{{apnsAddr, ap.Serve}, {fcmAddr, fc.Serve}} {
		ln, err := listenLoopback(s.addr)
		if err != nil {
			return err
		}
		go func() {
			if err := s.serve(ln); err != nil && err != http.ErrServerClosed {
				fmt.Fprintln(os.Stderr, "pnsfake: serve:", err)
			}
		}()
	}
	// Serve sets the URLs as it starts listening.
	for deadline := time.Now().Add(5 * time.Second); ap.URL() == "https://" || fc.URL() == "https://"; {
		if time.Now().After(deadline) {
			return fmt.Errorf("the fakes did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	info.APNSURL, info.FCMURL = ap.URL(), fc.URL()
	sa, err := fcmfake.NewServiceAccount(info.FCMProject, fc.TokenURL())
	if err != nil {
		return err
	}
	if err := fc.AddServiceAccount(sa); err != nil {
		return err
	}
	if info.APNSBearer, err = apnsfake.SignToken(p8, info.APNSKeyID, info.APNSTeamID, time.Now()); err != nil {
		return err
	}
	var ca bytes.Buffer
	ca.Write(ap.CertPEM())
	ca.Write(fc.CertPEM())
	info.CAFile = filepath.Join(dir, "ca.pem")
	info.APNSKeyFile = filepath.Join(dir, "apns.p8")
	info.FCMCredentialsFile = filepath.Join(dir, "fcm.json")
	for path, data := range map[string][]byte{info.CAFile: ca.Bytes(), info.APNSKeyFile: p8, info.FCMCredentialsFile: sa} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return err
		}
	}
	if info.FCMBearer, err = fcmAccessToken(sa, fc); err != nil {
		return fmt.Errorf("an FCM access token for h2load: %v", err)
	}
	js, _ := json.MarshalIndent(info, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "info.json"), js, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "pnsfake: APNs %s, FCM %s; credentials in %s\n", info.APNSURL, info.FCMURL, dir)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-sig:
			ap.Close()
			fc.Close()
			return nil
		case <-tick:
			fmt.Fprintf(os.Stderr, "pnsfake: apns accepted %d refused %d conns %d | fcm accepted %d refused %d conns %d\n",
				ap.Log.Accepted(), ap.Log.Refused(), ap.Conns(), fc.Log.Accepted(), fc.Log.Refused(), fc.Conns())
		}
	}
}

// fcmAccessToken gets a token from the fake's endpoint the way a client
// does, for tools (h2load) that cannot.
func fcmAccessToken(sa []byte, fc *fcmfake.Server) (string, error) {
	cfg, err := google.JWTConfigFromJSON(sa, "https://www.googleapis.com/auth/firebase.messaging")
	if err != nil {
		return "", err
	}
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: fc.CertPool()}}}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, cl)
	tok, err := cfg.TokenSource(ctx).Token()
	if err != nil {
		return "", err
	}
	return tok.AccessToken, nil
}
