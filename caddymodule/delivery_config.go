package caddymodule

import "github.com/caddyserver/caddy/v2"

// DeliveryConfig configures how a hub delivers: the push services'
// credentials and the fan-out engine of this replica. Secrets are usually
// environment placeholders ({env.APNS_KEY_FILE}).
type DeliveryConfig struct {
	APNS    *APNSConfig    `json:"apns,omitempty"`
	FCM     *FCMConfig     `json:"fcm,omitempty"`
	WNS     *WNSConfig     `json:"wns,omitempty"`
	WebPush *WebPushConfig `json:"webpush,omitempty"`
	// LogOnly logs the notifications of platforms that have no
	// credentials instead of counting them as NoCredentials: the quick
	// start's delivery target.
	LogOnly bool `json:"log_only,omitempty"`
	// Workers is how many send parts this replica runs at once (default 4).
	Workers int `json:"workers,omitempty"`
	// Concurrency is how many deliveries per platform are in flight at
	// once in this replica (default 256).
	Concurrency int `json:"concurrency,omitempty"`
	// Parts is how many jobs a large send is cut into (default: the
	// store's shard count, 16).
	Parts int `json:"parts,omitempty"`
	// ReclaimAfter is how long a part may go untouched before another
	// replica takes it over (default 30s).
	ReclaimAfter caddy.Duration `json:"reclaim_after,omitempty"`
	// Window is the delivery window after which undelivered notifications
	// are abandoned (default 30m).
	Window caddy.Duration `json:"window,omitempty"`
	// Grace is how long the parts in progress may finish when the replica
	// stops or its delivery config changes (default 10s).
	Grace caddy.Duration `json:"grace,omitempty"`
	// RootCAFile is a PEM file of extra CAs to trust for the push services
	// (a private gateway; the test fakes). The system roots stay trusted.
	RootCAFile string `json:"root_ca_file,omitempty"`
}

// Pacing is a credential's shared rate: all replicas together send at most
// Rate notifications per second through it (0: unpaced), in bursts of at
// most Burst (default: one second's worth).
type Pacing struct {
	Rate  float64 `json:"rate,omitempty"`
	Burst int64   `json:"burst,omitempty"`
}

// APNSConfig is an Apple Push Notification service credential: a token
// signing key (.p8) or a client certificate.
type APNSConfig struct {
	// KeyFile is the .p8 signing key; KeyID and TeamID identify it.
	KeyFile string `json:"key_file,omitempty"`
	KeyID   string `json:"key_id,omitempty"`
	TeamID  string `json:"team_id,omitempty"`
	// CertFile and CertKeyFile are the PEM client certificate and key, the
	// alternative to token auth.
	CertFile    string `json:"cert_file,omitempty"`
	CertKeyFile string `json:"cert_key_file,omitempty"`
	// Topic is the app's bundle id, the default apns-topic.
	Topic string `json:"topic"`
	// Endpoint is "production" (default), "sandbox", or a URL.
	Endpoint string `json:"endpoint,omitempty"`
	// Conns is the number of HTTP/2 connections (default 2).
	Conns int `json:"conns,omitempty"`
	Pacing
}

// FCMConfig is a Firebase Cloud Messaging (HTTP v1) credential.
type FCMConfig struct {
	// CredentialsFile is the service account's JSON key file.
	CredentialsFile string `json:"credentials_file"`
	// ProjectID overrides the key file's project.
	ProjectID string `json:"project_id,omitempty"`
	// Endpoint and TokenURL override Google's (tests, proxies).
	Endpoint string `json:"endpoint,omitempty"`
	TokenURL string `json:"token_url,omitempty"`
	Conns    int    `json:"conns,omitempty"`
	// Pacing defaults to FCM's default project quota, 600,000 messages
	// per minute.
	Pacing
}

// WNSConfig is a Windows Notification Service credential.
type WNSConfig struct {
	// ClientID is the package SID, ClientSecret its secret.
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
	// TokenURL and Endpoint override Microsoft's (tests, proxies).
	TokenURL string `json:"token_url,omitempty"`
	Endpoint string `json:"endpoint,omitempty"`
	Pacing
}

// WebPushConfig is the hub's VAPID identity for Web Push.
type WebPushConfig struct {
	// VAPIDPublicKey and VAPIDPrivateKey are base64url, as web-push tools
	// print them.
	VAPIDPublicKey  string `json:"vapid_public_key,omitempty"`
	VAPIDPrivateKey string `json:"vapid_private_key"`
	// Subject is a mailto: or https: contact for the push services.
	Subject string `json:"subject"`
	Pacing
}
