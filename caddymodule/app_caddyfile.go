package caddymodule

import (
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
//			shards <n>
//			data_dir <path>
//			max_tags <n>
//			max_templates <n>
//			ttl <duration>
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
	if !d.NextArg() {
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
		case "ttl":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil {
				return nil, d.Errf("ttl: %v", err)
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
