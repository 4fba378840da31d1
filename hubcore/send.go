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

// Send resolves the notification's audience, renders each target, keeps
// one delivery per handle and hands the deliveries to s, synchronously. It
// is the simple in-process pipeline; the distributed fan-out builds on the
// same steps.
func (h *Hub) Send(ctx context.Context, n Notification, s Sender) (Outcome, error) {
	q := AudienceQuery{Expr: n.Expr}
	var props template.PropMap
	if n.Format == payload.Template {
		q.Template = true
		var err error
		if props, err = template.ParseProps(n.Body); err != nil {
			return Outcome{}, &Error{Code: CodeInvalid, Field: "body", Reason: err.Error(), Err: err}
		}
	} else {
		p, err := PlatformOf(n.Format)
		if err != nil {
			return Outcome{}, err
		}
		q.Platform = p
		wnsType := ""
		for _, hd := range n.Headers {
			if p == WNS && strings.EqualFold(hd.Name, "X-WNS-Type") {
				wnsType = hd.Value
			}
		}
		if err := payload.Check(n.Format, n.Body, wnsType); err != nil {
			return Outcome{}, renderError("body", err)
		}
	}
	var out Outcome
	seen := make(map[string]struct{})
	var buf []byte
	overlay := &template.Overlay{Over: props}
	err := h.store.Resolve(ctx, q, SendBatch, func(targets []Target) error {
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
			d := &Delivery{RegistrationID: t.RegistrationID, InstallationID: t.InstallationID, Platform: t.Platform, Channel: t.Channel}
			if q.Template {
				ct := t.Template.Compiled()
				if ct == nil {
					c.Invalid++
					continue
				}
				overlay.Under = template.NewPropMap(t.PushVariables)
				r, err := ct.Render(buf[:0], t.Platform, overlay)
				if err != nil {
					c.Invalid++
					continue
				}
				buf = r.Body
				r.Body = append([]byte(nil), r.Body...)
				d.Rendered = r
			} else {
				d.Rendered = Rendered{Body: n.Body, Headers: n.Headers}
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
