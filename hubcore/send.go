package hubcore

import (
	"context"
	"fmt"
	"strings"

	"github.com/pushgate/pushgate/hubcore/payload"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
	"github.com/pushgate/pushgate/hubcore/template"
)

// Notification is one send: a native payload for one platform format, or a
// template send whose body is the properties every matching template is
// rendered with.
type Notification struct {
	Format payload.Format
	Body   []byte
	// Headers are the caller's pass-through headers of a native send
	// (apns-*, X-WNS-*, TTL/Urgency/Topic for browsers).
	Headers []Header
	// Expr is the audience; nil is a broadcast.
	Expr *tagexpr.Expr
}

// Delivery is one notification for one device, rendered and checked: what
// a platform sender needs.
type Delivery struct {
	NotificationID string
	RegistrationID string
	InstallationID string
	Platform       Platform
	Channel        PushChannel
	Rendered
}

// Sender hands deliveries to a push service. It is declared here, by the
// send pipeline that calls it; the platform senders and the log-only
// target implement it.
type Sender interface {
	Send(ctx context.Context, d *Delivery) error
}

// SenderFunc adapts a function to Sender.
type SenderFunc func(ctx context.Context, d *Delivery) error

// Send calls f.
func (f SenderFunc) Send(ctx context.Context, d *Delivery) error { return f(ctx, d) }

// Counts tallies what happened to a send's targets on one platform.
type Counts struct {
	Success int64 `json:"success"`
	// Skipped counts targets whose handle already received this send (the
	// hub delivers at most once per handle).
	Skipped int64 `json:"skipped"`
	// Invalid counts targets whose template did not render to a payload the
	// service accepts (too large, bad header value).
	Invalid int64 `json:"invalid"`
	// Failed counts deliveries the sender refused.
	Failed int64 `json:"failed"`
}

// Outcome is the result of a send, per platform.
type Outcome struct {
	Targets    int64                `json:"targets"`
	ByPlatform map[Platform]*Counts `json:"byPlatform,omitempty"`
}

func (o *Outcome) counts(p Platform) *Counts {
	if o.ByPlatform == nil {
		o.ByPlatform = make(map[Platform]*Counts)
	}
	c := o.ByPlatform[p]
	if c == nil {
		c = &Counts{}
		o.ByPlatform[p] = c
	}
	return c
}

// SendBatch is the number of targets resolved per store round trip.
const SendBatch = 500

// Prepared is a checked notification: the audience query it implies and,
// for a template send, the parsed properties.
type Prepared struct {
	Query AudienceQuery
	Props template.PropMap
	n     Notification
}

// Prepare checks a notification before anything is resolved: the body of a
// template send parses as properties, a native body passes its platform's
// payload rules. Errors are *Error (CodeInvalid, CodeLimit).
func Prepare(n Notification) (*Prepared, error) {
	p := &Prepared{n: n, Query: AudienceQuery{Expr: n.Expr}}
	if n.Format == payload.Template {
		p.Query.Template = true
		var err error
		if p.Props, err = template.ParseProps(n.Body); err != nil {
			return nil, &Error{Code: CodeInvalid, Field: "body", Reason: err.Error(), Err: err}
		}
		return p, nil
	}
	pl, err := PlatformOf(n.Format)
	if err != nil {
		return nil, err
	}
	p.Query.Platform = pl
	wnsType := ""
	for _, hd := range n.Headers {
		if pl == WNS && strings.EqualFold(hd.Name, "X-WNS-Type") {
			wnsType = hd.Value
		}
	}
	if err := payload.Check(n.Format, n.Body, wnsType); err != nil {
		return nil, renderError("body", err)
	}
	return p, nil
}

// Render makes target t's delivery: the target's template rendered with the
// send's properties over its push variables, or the native body. buf is a
// scratch buffer (returned grown) for rendering; the delivery's body is its
// own copy. On failure it returns the outcome to count instead
// (OutcomeInvalidNotificationSize or OutcomeInvalidPayload).
func (p *Prepared) Render(t *Target, buf []byte) (*Delivery, []byte, OutcomeName) {
	d := &Delivery{RegistrationID: t.RegistrationID, InstallationID: t.InstallationID, Platform: t.Platform, Channel: t.Channel}
	if !p.Query.Template {
		d.Rendered = Rendered{Body: p.n.Body, Headers: p.n.Headers}
		return d, buf, ""
	}
	ct := t.Template.Compiled()
	if ct == nil {
		return nil, buf, OutcomeInvalidPayload
	}
	r, err := ct.Render(buf[:0], t.Platform, &template.Overlay{Over: p.Props, Under: template.NewPropMap(t.PushVariables)})
	if err != nil {
		if CodeOf(err) == CodeLimit {
			return nil, buf, OutcomeInvalidNotificationSize
		}
		return nil, buf, OutcomeInvalidPayload
	}
	buf = r.Body
	r.Body = append([]byte(nil), r.Body...)
	d.Rendered = r
	return d, buf, ""
}

// Send resolves the notification's audience, renders each target, keeps
// one delivery per handle and hands the deliveries to s, synchronously, in
// this process. It suits small sends and tests; the fan-out package runs
// sends across replicas with retries, pacing and stored outcomes.
func (h *Hub) Send(ctx context.Context, n Notification, s Sender) (Outcome, error) {
	p, err := Prepare(n)
	if err != nil {
		return Outcome{}, err
	}
	var out Outcome
	seen := make(map[string]struct{})
	var buf []byte
	err = h.store.Resolve(ctx, p.Query, SendBatch, func(targets []Target) error {
		for i := range targets {
			t := &targets[i]
			out.Targets++
			c := out.counts(t.Platform)
			key := string(t.Platform) + "\x00" + t.Channel.Key(t.Platform)
			if _, dup := seen[key]; dup {
				c.Skipped++
				continue
			}
			seen[key] = struct{}{}
			var d *Delivery
			var bad OutcomeName
			if d, buf, bad = p.Render(t, buf); bad != "" {
				c.Invalid++
				continue
			}
			if err := s.Send(ctx, d); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				c.Failed++
				continue
			}
			c.Success++
		}
		return nil
	})
	return out, err
}

// PlatformOf maps a native send's format to the platform it targets.
func PlatformOf(f payload.Format) (Platform, error) {
	for _, p := range Platforms {
		if p.Format() == f {
			return p, nil
		}
	}
	return "", &Error{Code: CodeInvalid, Field: "format", Reason: fmt.Sprintf("format %q is not a native platform format", f)}
}
