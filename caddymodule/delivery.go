package caddymodule

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/apns"
	"github.com/pushgate/pushgate/hubcore/fanout"
	"github.com/pushgate/pushgate/hubcore/fcm"
	"github.com/pushgate/pushgate/hubcore/webpush"
	"github.com/pushgate/pushgate/hubcore/wns"
	"github.com/pushgate/pushgate/memstore"
	"github.com/pushgate/pushgate/redisstore"
)

// engines holds every hub's running fan-out engine across config reloads,
// keyed by its store and its delivery config: a reload that changes
// neither keeps the engine (and its in-flight sends) running; one that
// changes the credentials starts a new engine, and the old one gets its
// Grace to finish the parts it holds.
var engines = caddy.NewUsagePool()

type pooledEngine struct {
	engine  *fanout.Engine
	cancel  context.CancelFunc
	done    chan struct{}
	closers []func() error
}

func (p *pooledEngine) Destruct() error {
	p.cancel()
	<-p.done
	for _, c := range p.closers {
		_ = c()
	}
	return nil
}

// engineStarts counts engines started, so tests can tell a reload that
// kept the engine from one that replaced it.
var engineStarts atomic.Int64

// brokers are the embedded stores' brokers: a single process's shared
// sending state, kept as long as the store.
var brokers = caddy.NewUsagePool()

type pooledBroker struct{ *memstore.Broker }

func (pooledBroker) Destruct() error { return nil }

// engineKey identifies an engine by its store and delivery config; the
// config's hash stands in for it so that no secret is kept in a key.
func engineKey(storeKey string, dc *DeliveryConfig, repl *caddy.Replacer) (string, error) {
	b, err := json.Marshal(dc)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(repl.ReplaceAll(string(b), "")))
	return storeKey + "|" + hex.EncodeToString(sum[:]), nil
}

// startEngine opens (or shares) the hub's engine.
func (a *App) startEngine(hc *HubConfig, storeKey string, st hubcore.Store, core *hubcore.Hub, repl *caddy.Replacer) (*fanout.Engine, string, error) {
	dc := hc.Delivery
	if dc == nil {
		dc = &DeliveryConfig{}
	}
	key, err := engineKey(storeKey, dc, repl)
	if err != nil {
		return nil, "", err
	}
	var b fanout.Broker // the embedded store's; a Redis broker is made with its engine
	if _, ok := st.(*redisstore.Store); !ok {
		// One broker per embedded store, referenced by every config that
		// uses the store, like the store itself.
		bv, _, err := brokers.LoadOrNew(storeKey, func() (caddy.Destructor, error) {
			return pooledBroker{memstore.NewBroker(memstore.BrokerOptions{})}, nil
		})
		if err != nil {
			return nil, "", err
		}
		a.brokerKeys = append(a.brokerKeys, storeKey)
		b = bv.(pooledBroker).Broker
	}
	v, _, err := engines.LoadOrNew(key, func() (caddy.Destructor, error) {
		engineStarts.Add(1)
		b := b
		if rs, ok := st.(*redisstore.Store); ok {
			rb, err := redisstore.NewBroker(rs.Client(), hc.Name, redisstore.BrokerOptions{})
			if err != nil {
				return nil, err
			}
			b = rb
		}
		log := a.logger.Named("delivery").With(zap.String("hub", hc.Name))
		senders, paces, closers, err := buildSenders(dc, repl, log)
		if err != nil {
			return nil, err
		}
		parts := dc.Parts
		if parts == 0 {
			if s, ok := st.(interface{ Shards() int }); ok {
				parts = s.Shards()
			}
		}
		grace := time.Duration(dc.Grace)
		if grace == 0 {
			grace = 10 * time.Second
		}
		en, err := fanout.New(fanout.Config{
			Store: st, Broker: b, Senders: senders, Paces: paces, ParseExpr: core.ParseExpression,
			Workers: dc.Workers, Concurrency: dc.Concurrency, Parts: parts,
			ReclaimAfter: time.Duration(dc.ReclaimAfter), Window: time.Duration(dc.Window), Grace: grace,
			Logger: slog.New(zapslog.NewHandler(log.Core())), Observer: deliveryObserver{hub: hc.Name, m: a.dmetrics},
		})
		if err != nil {
			for _, c := range closers {
				_ = c()
			}
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		pe := &pooledEngine{engine: en, cancel: cancel, done: make(chan struct{}), closers: closers}
		go func() {
			defer close(pe.done)
			_ = en.Run(ctx)
		}()
		return pe, nil
	})
	if err != nil {
		return nil, "", err
	}
	return v.(*pooledEngine).engine, key, nil
}

// buildSenders makes the configured platforms' senders and their paces.
func buildSenders(dc *DeliveryConfig, repl *caddy.Replacer, log *zap.Logger) (map[hubcore.Platform]hubcore.Sender, map[hubcore.Platform]fanout.Pace, []func() error, error) {
	senders := make(map[hubcore.Platform]hubcore.Sender)
	paces := make(map[hubcore.Platform]fanout.Pace)
	var closers []func() error
	fail := func(err error) (map[hubcore.Platform]hubcore.Sender, map[hubcore.Platform]fanout.Pace, []func() error, error) {
		for _, c := range closers {
			_ = c()
		}
		return nil, nil, nil, err
	}
	r := func(s string) string { return repl.ReplaceAll(s, "") }
	var roots *x509.CertPool
	if dc.RootCAFile != "" {
		pem, err := os.ReadFile(r(dc.RootCAFile))
		if err != nil {
			return fail(fmt.Errorf("delivery: root_ca_file: %v", err))
		}
		if roots, err = x509.SystemCertPool(); err != nil || roots == nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return fail(fmt.Errorf("delivery: root_ca_file %s holds no PEM certificate", dc.RootCAFile))
		}
	}
	pace := func(p hubcore.Platform, bucket string, pc Pacing, dflt float64) {
		rate := pc.Rate
		if rate == 0 {
			rate = dflt
		}
		if rate <= 0 {
			return
		}
		burst := pc.Burst
		if burst <= 0 {
			burst = max(1, int64(rate))
		}
		paces[p] = fanout.Pace{Bucket: bucket, Rate: rate, Burst: burst}
	}
	if c := dc.APNS; c != nil {
		cfg := apns.Config{KeyID: r(c.KeyID), TeamID: r(c.TeamID), Topic: r(c.Topic), RootCAs: roots, Conns: c.Conns}
		switch ep := r(c.Endpoint); ep {
		case "", "production":
			cfg.Endpoint = apns.Production
		case "sandbox":
			cfg.Endpoint = apns.Sandbox
		default:
			cfg.Endpoint = ep
		}
		bucket := "apns:" + cfg.TeamID + ":" + cfg.KeyID
		if c.KeyFile != "" {
			pem, err := os.ReadFile(r(c.KeyFile))
			if err != nil {
				return fail(fmt.Errorf("delivery: apns key_file: %v", err))
			}
			cfg.KeyPEM = pem
		}
		if c.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(r(c.CertFile), r(c.CertKeyFile))
			if err != nil {
				return fail(fmt.Errorf("delivery: apns certificate: %v", err))
			}
			cfg.Certificate = &cert
			bucket = "apns:cert:" + cfg.Topic
		}
		s, err := apns.New(cfg)
		if err != nil {
			return fail(fmt.Errorf("delivery: %v", err))
		}
		senders[hubcore.APNS] = s
		closers = append(closers, s.Close)
		pace(hubcore.APNS, bucket, c.Pacing, 0)
	}
	if c := dc.FCM; c != nil {
		js, err := os.ReadFile(r(c.CredentialsFile))
		if err != nil {
			return fail(fmt.Errorf("delivery: fcm credentials_file: %v", err))
		}
		s, err := fcm.New(fcm.Config{CredentialsJSON: js, ProjectID: r(c.ProjectID), Endpoint: r(c.Endpoint), TokenURL: r(c.TokenURL), RootCAs: roots, Conns: c.Conns})
		if err != nil {
			return fail(fmt.Errorf("delivery: %v", err))
		}
		senders[hubcore.FCMV1] = s
		closers = append(closers, s.Close)
		var sa struct {
			ProjectID string `json:"project_id"`
		}
		_ = json.Unmarshal(js, &sa)
		project := r(c.ProjectID)
		if project == "" {
			project = sa.ProjectID
		}
		pace(hubcore.FCMV1, "fcm:"+project, c.Pacing, 600_000.0/60)
	}
	if c := dc.WNS; c != nil {
		s, err := wns.New(wns.Config{ClientID: r(c.ClientID), ClientSecret: r(c.ClientSecret), TokenURL: r(c.TokenURL), EndpointOverride: r(c.Endpoint), RootCAs: roots})
		if err != nil {
			return fail(fmt.Errorf("delivery: %v", err))
		}
		senders[hubcore.WNS] = s
		closers = append(closers, s.Close)
		pace(hubcore.WNS, "wns:"+r(c.ClientID), c.Pacing, 0)
	}
	if c := dc.WebPush; c != nil {
		s, err := webpush.New(webpush.Config{VAPIDPrivateKey: r(c.VAPIDPrivateKey), VAPIDPublicKey: r(c.VAPIDPublicKey), Subject: r(c.Subject), RootCAs: roots})
		if err != nil {
			return fail(fmt.Errorf("delivery: %v", err))
		}
		senders[hubcore.Browser] = s
		closers = append(closers, s.Close)
		pace(hubcore.Browser, "webpush:"+s.PublicKey(), c.Pacing, 0)
	}
	if dc.LogOnly {
		ls := logSender(log)
		for _, p := range hubcore.Platforms {
			if senders[p] == nil {
				senders[p] = ls
			}
		}
	}
	return senders, paces, closers, nil
}
