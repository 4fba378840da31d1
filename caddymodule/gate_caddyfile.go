package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("pushgate_gate", parseGate)
	// The gate is an authentication handler: it runs with them, before
	// anything that answers (handle, respond, reverse_proxy, file_server),
	// so identity headers are stripped and device endpoints answered first.
	httpcaddyfile.RegisterDirectiveOrder("pushgate_gate", httpcaddyfile.After, "forward_auth")
}

// parseGate sets up the gate from the Caddyfile:
//
//	pushgate_gate {
//		hub <name>
//		prefix <path>            # default /push
//		policy <dir>
//		oidc {
//			issuer <url>
//			client_id <id>...    # accept ID tokens for these clients
//			audience <aud>...    # accept JWT access tokens for these APIs
//			user_claim <claim>   # default sub
//			algorithms <alg>...
//		}
//		identity_headers         # pass the verified identity upstream
//		max_body <size>          # default 256KiB
//		decision_cache <n>|off   # decisions kept per loaded policy; default 16384
//	}
func parseGate(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	g := new(Gate)
	err := g.UnmarshalCaddyfile(h.Dispenser)
	return g, err
}

// UnmarshalCaddyfile implements caddyfile.Unmarshaler.
func (g *Gate) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "hub", "prefix", "policy":
			opt := d.Val()
			if !d.NextArg() {
				return d.ArgErr()
			}
			switch opt {
			case "hub":
				g.Hub = d.Val()
			case "prefix":
				g.Prefix = d.Val()
			case "policy":
				g.Policy = d.Val()
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "identity_headers":
			if d.NextArg() {
				return d.ArgErr()
			}
			g.IdentityHeaders = true
		case "max_body":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := humanize.ParseBytes(d.Val())
			if err != nil || n == 0 {
				return d.Errf("max_body: %q is not a size", d.Val())
			}
			g.MaxBodyBytes = int64(n)
		case "decision_cache":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if d.Val() == "off" {
				g.DecisionCache = -1
			} else if n, err := strconv.Atoi(d.Val()); err != nil || n <= 0 {
				return d.Errf("decision_cache: %q is neither a positive number of decisions nor off", d.Val())
			} else {
				g.DecisionCache = n
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "oidc":
			if err := g.parseOIDC(d); err != nil {
				return err
			}
		default:
			return d.Errf("unknown pushgate_gate option %q", d.Val())
		}
	}
	if g.Hub == "" {
		return d.Err("pushgate_gate: hub is required")
	}
	return nil
}

func (g *Gate) parseOIDC(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	if g.OIDC == nil {
		g.OIDC = &OIDCConfig{}
	}
	o := g.OIDC
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.Errf("oidc %s needs a value", opt)
		}
		single := func(dst *string) error {
			if len(args) != 1 {
				return d.Errf("oidc %s takes one value, got %s", opt, strconv.Itoa(len(args)))
			}
			*dst = args[0]
			return nil
		}
		var err error
		switch opt {
		case "issuer":
			err = single(&o.Issuer)
		case "user_claim":
			err = single(&o.UserClaim)
		case "client_id":
			o.ClientIDs = append(o.ClientIDs, args...)
		case "audience":
			o.Audiences = append(o.Audiences, args...)
		case "algorithms":
			o.Algorithms = append(o.Algorithms, args...)
		default:
			return d.Errf("unknown oidc option %q", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*Gate)(nil)
