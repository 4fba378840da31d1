package caddymodule

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("pushgate_nh", parseNHAPI)
	// The API answers every request routed to it, like respond; it comes
	// after the authentication handlers (and so after pushgate_gate, which
	// passes non-device paths on) and after handle blocks, so a site can
	// route other paths elsewhere.
	httpcaddyfile.RegisterDirectiveOrder("pushgate_nh", httpcaddyfile.Before, "respond")
}

// parseNHAPI sets up the Notification Hubs API from the Caddyfile:
//
//	pushgate_nh [<matcher>] {
//		hub <name>
//		rule <name> <key> <rights...>   # repeated; rights Listen, Send, Manage
//		max_body <size>                 # sends; default 64KB
//	}
func parseNHAPI(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	n := new(NHAPI)
	err := n.UnmarshalCaddyfile(h.Dispenser)
	return n, err
}

// UnmarshalCaddyfile implements caddyfile.Unmarshaler.
func (n *NHAPI) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "hub":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n.Hub = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "rule":
			args := d.RemainingArgs()
			if len(args) < 3 {
				return d.Err("rule takes a name, a key and at least one right (Listen, Send, Manage)")
			}
			if _, err := parseRights(args[2:]); err != nil {
				return d.Errf("rule %s: %v", args[0], err)
			}
			n.Rules = append(n.Rules, NHRule{Name: args[0], Key: args[1], Rights: args[2:]})
		case "max_body":
			if !d.NextArg() {
				return d.ArgErr()
			}
			v, err := humanize.ParseBytes(d.Val())
			if err != nil || v == 0 {
				return d.Errf("max_body: %q is not a size", d.Val())
			}
			n.MaxBodyBytes = int64(v)
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unknown pushgate_nh option %q", d.Val())
		}
	}
	if n.Hub == "" {
		return d.Err("pushgate_nh: hub is required")
	}
	if len(n.Rules) == 0 {
		return d.Err("pushgate_nh: at least one rule is required")
	}
	return nil
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*NHAPI)(nil)
