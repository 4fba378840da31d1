package caddymodule

import (
	"math"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("pushgate", parseGlobalOption)
}

// parseGlobalOption sets up the pushgate app from the global options block:
//
//	pushgate {
//		dev_issuer <loopback ip:port>   # development only
//		hub <name> {
//			redis [<addr>...]        # none (e.g. an unset {$PUSHGATE_REDIS}): the embedded store
//			redis_master <name>      # Sentinel
//			redis_username <user>
//			redis_password <secret>
//			redis_db <n>
//			redis_dial_timeout <duration>   # default 2s
//			redis_read_timeout <duration>   # default 5s
//			redis_max_retries <n>           # default 1; 0: never retry
//			shards <n>
//			data_dir <path>
//			max_tags <n>
//			max_templates <n>
//			ttl <duration>
//			delivery {
//				log_only                 # platforms without credentials: log instead of send
//				workers <n>
//				concurrency <n>
//				parts <n>
//				reclaim_after <duration>
//				window <duration>
//				grace <duration>
//				root_ca_file <pem>
//				apns    { key_file key_id team_id cert_file cert_key_file topic endpoint conns rate burst }
//				fcm     { credentials_file project_id endpoint token_url conns rate burst }
//				wns     { client_id client_secret token_url endpoint rate burst }
//				webpush { vapid_public_key vapid_private_key subject rate burst }
//			}
//		}
//	}
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("the pushgate global option may appear only once")
	}
	app := new(App)
	d.Next() // "pushgate"
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "hub":
			hc, err := parseHub(d)
			if err != nil {
				return nil, err
			}
			app.Hubs = append(app.Hubs, hc)
		case "dev_issuer":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			app.DevIssuer = d.Val()
			if d.NextArg() {
				return nil, d.ArgErr()
			}
		default:
			return nil, d.Errf("unknown pushgate option %q (want: hub, dev_issuer)", d.Val())
		}
	}
	return httpcaddyfile.App{Name: "pushgate", Value: caddyconfig.JSON(app, nil)}, nil
}

func parseHub(d *caddyfile.Dispenser) (*HubConfig, error) {
	hc := &HubConfig{}
	if !d.NextArg() || d.Val() == "" {
		return nil, d.Err("hub needs a name")
	}
	hc.Name = d.Val()
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	redisConf := func() *RedisConfig {
		if hc.Redis == nil {
			hc.Redis = &RedisConfig{}
		}
		return hc.Redis
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		switch opt {
		case "redis":
			for d.NextArg() {
				for _, a := range strings.Fields(d.Val()) {
					redisConf().Addrs = append(redisConf().Addrs, a)
				}
			}
		case "redis_master", "redis_username", "redis_password", "data_dir":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			v := d.Val()
			switch opt {
			case "redis_master":
				redisConf().MasterName = v
			case "redis_username":
				redisConf().Username = v
			case "redis_password":
				redisConf().Password = v
			case "data_dir":
				hc.DataDir = v
			}
		case "redis_db", "shards", "max_tags", "max_templates":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 0 {
				return nil, d.Errf("%s: %q is not a non-negative integer", opt, d.Val())
			}
			switch opt {
			case "redis_db":
				redisConf().DB = n
			case "shards":
				redisConf().Shards = n
			case "max_tags":
				hc.MaxTags = n
			case "max_templates":
				hc.MaxTemplates = n
			}
		case "redis_dial_timeout", "redis_read_timeout":
			var dur caddy.Duration
			if err := durationArg(d, &dur); err != nil {
				return nil, err
			}
			if dur <= 0 {
				return nil, d.Errf("%s: %q must be positive", opt, d.Val())
			}
			if opt == "redis_dial_timeout" {
				redisConf().DialTimeout = dur
			} else {
				redisConf().ReadTimeout = dur
			}
		case "redis_max_retries":
			var n int
			if err := intArg(d, &n); err != nil {
				return nil, err
			}
			// In the JSON config 0 means the default, as everywhere; -1
			// is how go-redis spells "never".
			if n == 0 {
				n = -1
			}
			redisConf().MaxRetries = n
		case "delivery":
			dc, err := parseDelivery(d)
			if err != nil {
				return nil, err
			}
			hc.Delivery = dc
		case "ttl":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil {
				return nil, d.Errf("ttl: %v", err)
			}
			if dur < 0 {
				// Below zero would silently mean "no TTL".
				return nil, d.Errf("ttl: %q is negative", d.Val())
			}
			hc.TTL = caddy.Duration(dur)
		default:
			return nil, d.Errf("unknown hub option %q", opt)
		}
		if d.NextArg() {
			return nil, d.ArgErr()
		}
	}
	// Redis options with no address (an unset {$PUSHGATE_REDIS}) leave the
	// hub on the embedded store.
	if hc.Redis != nil && len(hc.Redis.Addrs) == 0 {
		if hc.Redis.MasterName != "" {
			return nil, d.Err("redis_master needs the Sentinel addresses in redis")
		}
		hc.Redis = nil
	}
	return hc, nil
}

func parseDelivery(d *caddyfile.Dispenser) (*DeliveryConfig, error) {
	dc := &DeliveryConfig{}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		var err error
		switch opt {
		case "log_only":
			dc.LogOnly = true
		case "workers":
			err = intArg(d, &dc.Workers)
		case "concurrency":
			err = intArg(d, &dc.Concurrency)
		case "parts":
			err = intArg(d, &dc.Parts)
		case "reclaim_after":
			err = durationArg(d, &dc.ReclaimAfter)
		case "window":
			err = durationArg(d, &dc.Window)
		case "grace":
			err = durationArg(d, &dc.Grace)
		case "root_ca_file":
			err = stringArg(d, &dc.RootCAFile)
		case "apns":
			dc.APNS = &APNSConfig{}
			a := dc.APNS
			err = parseFields(d, map[string]func() error{
				"key_file": func() error { return stringArg(d, &a.KeyFile) }, "key_id": func() error { return stringArg(d, &a.KeyID) },
				"team_id": func() error { return stringArg(d, &a.TeamID) }, "cert_file": func() error { return stringArg(d, &a.CertFile) },
				"cert_key_file": func() error { return stringArg(d, &a.CertKeyFile) }, "topic": func() error { return stringArg(d, &a.Topic) },
				"endpoint": func() error { return stringArg(d, &a.Endpoint) }, "conns": func() error { return intArg(d, &a.Conns) },
			}, &a.Pacing)
		case "fcm":
			dc.FCM = &FCMConfig{}
			f := dc.FCM
			err = parseFields(d, map[string]func() error{
				"credentials_file": func() error { return stringArg(d, &f.CredentialsFile) }, "project_id": func() error { return stringArg(d, &f.ProjectID) },
				"endpoint": func() error { return stringArg(d, &f.Endpoint) }, "token_url": func() error { return stringArg(d, &f.TokenURL) },
				"conns": func() error { return intArg(d, &f.Conns) },
			}, &f.Pacing)
		case "wns":
			dc.WNS = &WNSConfig{}
			w := dc.WNS
			err = parseFields(d, map[string]func() error{
				"client_id": func() error { return stringArg(d, &w.ClientID) }, "client_secret": func() error { return stringArg(d, &w.ClientSecret) },
				"token_url": func() error { return stringArg(d, &w.TokenURL) }, "endpoint": func() error { return stringArg(d, &w.Endpoint) },
			}, &w.Pacing)
		case "webpush":
			dc.WebPush = &WebPushConfig{}
			w := dc.WebPush
			err = parseFields(d, map[string]func() error{
				"vapid_public_key": func() error { return stringArg(d, &w.VAPIDPublicKey) }, "vapid_private_key": func() error { return stringArg(d, &w.VAPIDPrivateKey) },
				"subject": func() error { return stringArg(d, &w.Subject) },
			}, &w.Pacing)
		default:
			return nil, d.Errf("unknown delivery option %q", opt)
		}
		if err != nil {
			return nil, err
		}
		if d.NextArg() {
			return nil, d.ArgErr()
		}
	}
	return dc, nil
}

// parseFields reads a block of one-argument options, the pacing ones
// (rate, burst) included.
func parseFields(d *caddyfile.Dispenser, fields map[string]func() error, p *Pacing) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	block := d.Val()
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		var err error
		switch opt {
		case "rate":
			if !d.NextArg() {
				return d.ArgErr()
			}
			p.Rate, err = strconv.ParseFloat(d.Val(), 64)
			// NaN and Inf parse as floats but have no JSON form: the
			// app's config would silently become null.
			if err != nil || !(p.Rate >= 0) || math.IsInf(p.Rate, 0) {
				return d.Errf("rate: %q is not a non-negative number of notifications per second", d.Val())
			}
		case "burst":
			var n int
			err = intArg(d, &n)
			p.Burst = int64(n)
		default:
			f := fields[opt]
			if f == nil {
				return d.Errf("unknown %s option %q", block, opt)
			}
			err = f()
		}
		if err != nil {
			return err
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}

func stringArg(d *caddyfile.Dispenser, v *string) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	*v = d.Val()
	return nil
}

func intArg(d *caddyfile.Dispenser, v *int) error {
	opt := d.Val()
	if !d.NextArg() {
		return d.ArgErr()
	}
	n, err := strconv.Atoi(d.Val())
	if err != nil || n < 0 {
		return d.Errf("%s: %q is not a non-negative integer", opt, d.Val())
	}
	*v = n
	return nil
}

func durationArg(d *caddyfile.Dispenser, v *caddy.Duration) error {
	opt := d.Val()
	if !d.NextArg() {
		return d.ArgErr()
	}
	dur, err := caddy.ParseDuration(d.Val())
	if err != nil {
		return d.Errf("%s: %v", opt, err)
	}
	if dur < 0 {
		// Below zero would silently mean the default.
		return d.Errf("%s: %q is negative", opt, d.Val())
	}
	*v = caddy.Duration(dur)
	return nil
}
