package caddymodule

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

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
//		rule <name> <key> <rights...> [{  # repeated; rights Listen, Send, Manage
//			throttle <rate>|off [burst <n>] # this rule's own limit
//		}]
//		max_body <size>                   # sends; default 64KB
//		import_max_body <size>            # x-pushgate/import; default 1GiB
//		throttle <rate>|off [burst <n>]   # per rule; default off
//	}
//
// A rate is <n>/<unit>: 200/s, 12000/m, 5/h, or 10/30s; the burst
// defaults to n.
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
			rule := NHRule{Name: args[0], Key: args[1], Rights: args[2:]}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				if d.Val() != "throttle" {
					return d.Errf("rule %s: unknown option %q (want throttle)", args[0], d.Val())
				}
				if rule.Throttle != nil {
					return d.Errf("rule %s: throttle is set twice", args[0])
				}
				t, err := parseThrottle(d)
				if err != nil {
					return err
				}
				rule.Throttle = t
			}
			n.Rules = append(n.Rules, rule)
		case "throttle":
			if n.Throttle != nil {
				return d.Err("throttle is set twice")
			}
			t, err := parseThrottle(d)
			if err != nil {
				return err
			}
			n.Throttle = t
		case "max_body", "import_max_body":
			opt := d.Val()
			if !d.NextArg() {
				return d.ArgErr()
			}
			v, err := humanize.ParseBytes(d.Val())
			if err != nil || v == 0 || v > 1<<62 {
				return d.Errf("%s: %q is not a size", opt, d.Val())
			}
			if opt == "max_body" {
				n.MaxBodyBytes = int64(v)
			} else {
				n.ImportMaxBytes = int64(v)
			}
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

// parseThrottle reads the arguments of a throttle line: a rate or off,
// then optionally burst <n>.
func parseThrottle(d *caddyfile.Dispenser) (*NHThrottle, error) {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return nil, d.Err("throttle takes a rate such as 200/s, or off")
	}
	if strings.EqualFold(args[0], "off") {
		if len(args) > 1 {
			return nil, d.Err("throttle off takes no other arguments")
		}
		return &NHThrottle{}, nil
	}
	rate, perUnit, err := parseRate(args[0])
	if err != nil {
		return nil, d.Errf("throttle: %v", err)
	}
	t := &NHThrottle{Rate: rate, Burst: max(1, int(math.Ceil(perUnit)))}
	switch {
	case len(args) == 1:
	case len(args) == 3 && args[1] == "burst":
		b, err := strconv.Atoi(args[2])
		if err != nil || b < 1 {
			return nil, d.Errf("throttle: burst %q is not a positive integer", args[2])
		}
		t.Burst = b
	default:
		return nil, d.Err("throttle takes a rate and optionally burst <n>")
	}
	// The bounds provisioning enforces, checked now so a bad rate fails
	// when the Caddyfile is adapted.
	if err := t.validate(); err != nil {
		return nil, d.Errf("%v", err)
	}
	return t, nil
}

// parseRate reads <n>/<unit> (unit s, m, h or a duration such as 30s) and
// returns the rate per second and n.
func parseRate(s string) (perSecond, n float64, err error) {
	num, unit, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0, fmt.Errorf("rate %q is not <n>/<unit> such as 200/s or 12000/m", s)
	}
	n, err = strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(n) || n <= 0 || n > 1e12 {
		return 0, 0, fmt.Errorf("rate %q: %q is not a number from 0 to 1e12", s, num)
	}
	var per time.Duration
	switch unit {
	case "s":
		per = time.Second
	case "m":
		per = time.Minute
	case "h":
		per = time.Hour
	default:
		if per, err = time.ParseDuration(unit); err != nil || per <= 0 {
			return 0, 0, fmt.Errorf("rate %q: %q is not s, m, h or a positive duration", s, unit)
		}
	}
	return n / per.Seconds(), n, nil
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*NHAPI)(nil)
