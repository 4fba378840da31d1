package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/fanout"
	"github.com/pushgate/pushgate/internal/devissuer"
	"github.com/pushgate/pushgate/memstore"
	"github.com/pushgate/pushgate/redisstore"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is the pushgate Caddy app: it owns the hubs — each hub's store
// connection and, later, its delivery workers and scheduler — so that the
// HTTP handlers on any route share them, and so that a config reload does
// not reconnect or drop work (stores live in a caddy.UsagePool keyed by
// their configuration).
type App struct {
	// Hubs are the hubs this server serves.
	Hubs []*HubConfig `json:"hubs,omitempty"`
	// DevIssuer, when set, serves a development OpenID issuer on this
	// loopback address (e.g. 127.0.0.1:8444) so the quick start needs no
	// identity provider. Its tokens are minted by `caddy pushgate
	// dev-token`. Never in production.
	DevIssuer string `json:"dev_issuer,omitempty"`

	hubs       map[string]*Hub
	keys       []string
	engineKeys []string
	brokerKeys []string
	dmetrics   *deliveryMetrics
	dev        *http.Server
	devLn      net.Listener
	ctx        caddy.Context
	logger     *zap.Logger
}

// HubConfig configures one hub.
type HubConfig struct {
	// Name is the hub's name: the {hub} of the backend API's URLs, and the
	// namespace of its keys in Redis.
	Name string `json:"name"`
	// Redis, when set, stores the hub in Redis; otherwise in the embedded
	// store.
	Redis *RedisConfig `json:"redis,omitempty"`
	// DataDir is where the embedded store keeps its snapshot (default:
	// Caddy's data directory, under pushgate/<hub>).
	DataDir string `json:"data_dir,omitempty"`
	// MaxTags bounds the tags of an installation (default 60).
	MaxTags int `json:"max_tags,omitempty"`
	// MaxTemplates bounds the templates of an installation (default 32).
	MaxTemplates int `json:"max_templates,omitempty"`
	// TTL, when set, is the longest lifetime of an installation or
	// registration.
	TTL caddy.Duration `json:"ttl,omitempty"`
	// Delivery configures the push services and this replica's share of
	// the sending; without it every platform counts NoCredentials.
	Delivery *DeliveryConfig `json:"delivery,omitempty"`
}

// RedisConfig says where a hub's Redis is. Several addresses mean a
// Cluster, a master name means Sentinel, one address a standalone server.
type RedisConfig struct {
	Addrs      []string `json:"addrs"`
	MasterName string   `json:"master_name,omitempty"`
	Username   string   `json:"username,omitempty"`
	Password   string   `json:"password,omitempty"`
	DB         int      `json:"db,omitempty"`
	// Shards is the number of index shards, fixed when the hub is created.
	Shards int `json:"shards,omitempty"`
	// DialTimeout bounds connecting to Redis (default
	// redisstore.DefaultDialTimeout).
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`
	// ReadTimeout bounds waiting for a command's answer (default 5 s, the
	// client library's): how long a request waits on a Redis that hangs
	// before it is answered 503.
	ReadTimeout caddy.Duration `json:"read_timeout,omitempty"`
	// MaxRetries is how often a failed command is tried again (default
	// redisstore.DefaultMaxRetries; -1: never).
	MaxRetries int `json:"max_retries,omitempty"`
}

// Hub is a provisioned hub: the hub core over its store, and the fan-out
// engine that sends for it.
type Hub struct {
	Name   string
	Core   *hubcore.Hub
	Engine *fanout.Engine
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "pushgate",
		New: func() caddy.Module { return new(App) },
	}
}

// stores holds every open store across config reloads: a reload provisions
// the new App before cleaning up the old one, so the reference count never
// drops to zero and the connection (or the embedded store's memory) stays.
var stores = caddy.NewUsagePool()

type pooledStore struct{ hubcore.Store }

func (p pooledStore) Destruct() error { return p.Store.Close() }

// Provision opens (or shares) each hub's store.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	a.hubs = make(map[string]*Hub)
	a.dmetrics = registerDeliveryMetrics(ctx.GetMetricsRegistry())
	repl := caddy.NewReplacer()
	for _, hc := range a.Hubs {
		if hc.Name == "" {
			return fmt.Errorf("pushgate: a hub needs a name")
		}
		if _, dup := a.hubs[hc.Name]; dup {
			return fmt.Errorf("pushgate: hub %q configured twice", hc.Name)
		}
		lim := hubcore.Limits{MaxTags: hc.MaxTags, MaxTemplates: hc.MaxTemplates, TTL: time.Duration(hc.TTL)}
		key, err := hc.poolKey(repl)
		if err != nil {
			return err
		}
		v, loaded, err := stores.LoadOrNew(key, func() (caddy.Destructor, error) {
			st, err := a.openStore(ctx, hc, repl, lim)
			if err != nil {
				return nil, err
			}
			return pooledStore{st}, nil
		})
		if err != nil {
			return fmt.Errorf("pushgate: hub %q: %v", hc.Name, err)
		}
		a.keys = append(a.keys, key)
		a.logger.Info("hub ready", zap.String("hub", hc.Name), zap.String("store", hc.storeKind()), zap.Bool("shared_with_previous_config", loaded))
		st := v.(pooledStore).Store
		core := hubcore.NewHub(st, hubcore.HubOptions{Limits: lim})
		en, ekey, err := a.startEngine(hc, key, st, core, repl)
		if err != nil {
			return fmt.Errorf("pushgate: hub %q: %v", hc.Name, err)
		}
		a.engineKeys = append(a.engineKeys, ekey)
		a.hubs[hc.Name] = &Hub{Name: hc.Name, Core: core, Engine: en}
	}
	return nil
}

func (hc *HubConfig) storeKind() string {
	if hc.Redis != nil && len(hc.Redis.Addrs) > 0 {
		return "redis"
	}
	return "embedded"
}

// poolKey identifies a store by everything that decides which data it
// holds, so two configs share a store exactly when they mean the same one.
func (hc *HubConfig) poolKey(repl *caddy.Replacer) (string, error) {
	b, err := json.Marshal(struct {
		Hub, Kind string
		Redis     *RedisConfig
		Dir       string
	}{hc.Name, hc.storeKind(), hc.Redis, repl.ReplaceAll(hc.DataDir, "")})
	return string(b), err
}

// storeOpens counts stores opened, so tests can tell a reload that shared
// the store from one that reconnected.
var storeOpens atomic.Int64

func (a *App) openStore(ctx context.Context, hc *HubConfig, repl *caddy.Replacer, lim hubcore.Limits) (hubcore.Store, error) {
	storeOpens.Add(1)
	if hc.storeKind() == "redis" {
		addrs := make([]string, 0, len(hc.Redis.Addrs))
		for _, s := range hc.Redis.Addrs {
			addrs = append(addrs, repl.ReplaceAll(s, ""))
		}
		return redisstore.New(ctx, redisstore.Options{
			Redis: redis.UniversalOptions{
				Addrs: addrs, MasterName: hc.Redis.MasterName, DB: hc.Redis.DB,
				Username: repl.ReplaceAll(hc.Redis.Username, ""), Password: repl.ReplaceAll(hc.Redis.Password, ""),
				DialTimeout: time.Duration(hc.Redis.DialTimeout), ReadTimeout: time.Duration(hc.Redis.ReadTimeout),
				MaxRetries: hc.Redis.MaxRetries,
			},
			Hub:    hc.Name,
			Shards: hc.Redis.Shards,
			Limits: lim,
		})
	}
	dir := repl.ReplaceAll(hc.DataDir, "")
	if dir == "" {
		dir = filepath.Join(caddy.AppDataDir(), "pushgate", hc.Name)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return memstore.Open(memstore.Options{Path: filepath.Join(dir, "registry.ndjson"), Limits: lim, SnapshotInterval: 10 * time.Second})
}

// Hub returns a provisioned hub by name.
func (a *App) Hub(name string) (*Hub, bool) {
	h, ok := a.hubs[name]
	return h, ok
}

// Start implements caddy.App: it starts the development issuer, if any.
func (a *App) Start() error {
	if a.DevIssuer == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(a.DevIssuer)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("pushgate: dev_issuer must listen on a loopback IP address and port, got %q", a.DevIssuer)
	}
	iss, err := devissuer.New(DevIssuerDir(), "http://"+a.DevIssuer)
	if err != nil {
		return fmt.Errorf("pushgate: dev issuer: %v", err)
	}
	// Caddy's listener pool lets the next config take the socket over on a
	// reload, which starts the new app before stopping this one.
	na, err := caddy.ParseNetworkAddress(a.DevIssuer)
	if err != nil {
		return fmt.Errorf("pushgate: dev issuer: %v", err)
	}
	lnAny, err := na.Listen(a.ctx, 0, net.ListenConfig{})
	if err != nil {
		return fmt.Errorf("pushgate: dev issuer: %v", err)
	}
	ln := lnAny.(net.Listener)
	a.devLn = ln
	a.dev = &http.Server{Handler: iss.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = a.dev.Serve(ln) }()
	a.logger.Warn(devissuer.Warning, zap.String("issuer", iss.Issuer()))
	return nil
}

// Stop implements caddy.App.
func (a *App) Stop() error {
	if a.dev != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := a.dev.Shutdown(ctx)
		_ = a.devLn.Close()
		return err
	}
	return nil
}

// DevIssuerDir is where the development issuer keeps its signing key, for
// the server and for `caddy pushgate dev-token` alike.
func DevIssuerDir() string { return filepath.Join(caddy.AppDataDir(), "pushgate", "dev-issuer") }

// Cleanup releases this config's references to the stores; the last
// reference closes a store (the embedded one writes its snapshot).
func (a *App) Cleanup() error {
	// Engines first: they stop claiming, and their parts in progress get
	// their grace while the store is still open.
	for _, k := range a.engineKeys {
		if _, err := engines.Delete(k); err != nil {
			a.logger.Error("stopping delivery", zap.Error(err))
		}
	}
	for _, k := range a.brokerKeys {
		_, _ = brokers.Delete(k)
	}
	for _, k := range a.keys {
		if _, err := stores.Delete(k); err != nil {
			a.logger.Error("closing store", zap.Error(err))
		}
	}
	return nil
}

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
