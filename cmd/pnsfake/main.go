// Command pnsfake serves the strict push-service fakes (APNs, FCM HTTP v1,
// WNS and Web Push) on loopback, for benchmarks and manual tests: pushgate,
// h2load and curl can all be pointed at the same fake. It writes what a
// client needs (URLs, the TLS certificates, an APNs signing key, an FCM
// service-account key file, the WNS app's credentials, a VAPID key pair and
// Web Push subscriptions, ready-made bearer tokens for h2load) into -dir, and
// prints the accepted and refused counts every -every.
//
//	go run ./cmd/pnsfake -dir /tmp/pnsfake
//
// Only loopback addresses are accepted.
package main

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
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
	webpushfake "github.com/pushgate/pushgate/internal/pnsfake/webpush"
	wnsfake "github.com/pushgate/pushgate/internal/pnsfake/wns"
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
	// WNS: the app's credentials, its token endpoint, and the base URL to
	// give the sender as its endpoint override; WNSChannels are channel URIs
	// (on notify.windows.com, as devices report them) the fake knows.
	WNSURL          string   `json:"wns_url"`
	WNSTokenURL     string   `json:"wns_token_url"`
	WNSClientID     string   `json:"wns_client_id"`
	WNSClientSecret string   `json:"wns_client_secret"`
	WNSChannels     []string `json:"wns_channels"`
	// Web Push: the VAPID key pair the subscriptions are bound to, and the
	// subscriptions (endpoint, p256dh, auth) on the fake.
	WebPushURL           string            `json:"webpush_url"`
	VAPIDPublicKey       string            `json:"vapid_public_key"`
	VAPIDPrivateKey      string            `json:"vapid_private_key"`
	WebPushSubscriptions []json.RawMessage `json:"webpush_subscriptions"`
}

func main() {
	var (
		dir       = flag.String("dir", "", "directory for info.json and the credentials (required)")
		apnsAddr  = flag.String("apns", "127.0.0.1:0", "loopback address of the fake APNs")
		fcmAddr   = flag.String("fcm", "127.0.0.1:0", "loopback address of the fake FCM")
		wnsAddr   = flag.String("wns", "127.0.0.1:0", "loopback address of the fake WNS")
		wpAddr    = flag.String("webpush", "127.0.0.1:0", "loopback address of the fake Web Push service")
		subs      = flag.Int("subscriptions", 10, "Web Push subscriptions and WNS channels to create")
		every     = flag.Duration("every", 5*time.Second, "how often to print counts (0: never)")
		slowAPNS  = flag.Duration("apns-delay", 0, "answer every APNs request after this delay")
		streamsMx = flag.Int("streams", 1000, "SETTINGS_MAX_CONCURRENT_STREAMS of both fakes")
	)
	flag.Parse()
	if err := run(*dir, *apnsAddr, *fcmAddr, *wnsAddr, *wpAddr, *subs, *every, *slowAPNS, *streamsMx); err != nil {
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

func run(dir, apnsAddr, fcmAddr, wnsAddr, wpAddr string, subs int, every, slow time.Duration, streams int) error {
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
	info.WNSClientID, info.WNSClientSecret = "ms-app://s-1-15-2-pnsfake", "pnsfake-secret"
	wf := wnsfake.New(wnsfake.Options{ClientID: info.WNSClientID, ClientSecret: info.WNSClientSecret, MaxConcurrentStreams: streams})
	vk, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	info.VAPIDPublicKey = base64.RawURLEncoding.EncodeToString(vk.PublicKey().Bytes())
	info.VAPIDPrivateKey = base64.RawURLEncoding.EncodeToString(vk.Bytes())
	wp := webpushfake.New(webpushfake.Options{VAPIDPublicKey: info.VAPIDPublicKey, MaxConcurrentStreams: streams})
	for _, s := range []struct {
		addr  string
		serve func(net.Listener) error
	}{{apnsAddr, ap.Serve}, {fcmAddr, fc.Serve}, {wnsAddr, wf.Serve}, {wpAddr, wp.Serve}} {
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
	for deadline := time.Now().Add(5 * time.Second); ap.URL() == "https://" || fc.URL() == "https://" || wf.URL() == "https://" || wp.URL() == "https://"; {
		if time.Now().After(deadline) {
			return fmt.Errorf("the fakes did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	info.APNSURL, info.FCMURL, info.WNSURL, info.WNSTokenURL, info.WebPushURL = ap.URL(), fc.URL(), wf.URL(), wf.TokenURL(), wp.URL()
	for i := 0; i < subs; i++ {
		info.WNSChannels = append(info.WNSChannels, wnsfake.ChannelURI(wnsfake.Channel(fmt.Sprintf("pnsfake-%d", i))))
		sub, err := wp.Subscribe()
		if err != nil {
			return err
		}
		js, _ := json.Marshal(map[string]string{"endpoint": sub.Endpoint, "p256dh": sub.P256DH, "auth": sub.Auth})
		info.WebPushSubscriptions = append(info.WebPushSubscriptions, js)
	}
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
	ca.Write(wf.CertPEM())
	ca.Write(wp.CertPEM())
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
	fmt.Fprintf(os.Stderr, "pnsfake: APNs %s, FCM %s, WNS %s, Web Push %s; credentials in %s\n", info.APNSURL, info.FCMURL, info.WNSURL, info.WebPushURL, dir)

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
			wf.Close()
			wp.Close()
			return nil
		case <-tick:
			fmt.Fprintf(os.Stderr, "pnsfake: accepted/refused apns %d/%d fcm %d/%d wns %d/%d webpush %d/%d\n",
				ap.Log.Accepted(), ap.Log.Refused(), fc.Log.Accepted(), fc.Log.Refused(),
				wf.Log.Accepted(), wf.Log.Refused(), wp.Log.Accepted(), wp.Log.Refused())
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
