package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/fanout"
	"github.com/pushgate/pushgate/hubcore/payload"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI adds operator endpoints to Caddy's admin API (local-only by
// default): sends through the hub's fan-out engine, their outcomes, a test
// send, the PNS feedback, and a dry run that explains an audience. Backends
// send through the Notification Hubs API; these exist so that an operator
// can try and debug a hub from the machine.
//
//	POST /pushgate/hubs/{hub}/send       {"format":"template","tags":"a && b","body":{...},"schedule":"RFC 3339"}
//	POST /pushgate/hubs/{hub}/test-send  {"format":"template","tags":"a && b","body":{...}}
//	POST /pushgate/hubs/{hub}/dry-run    {"format":"template","tags":"a && b"}
//	GET  /pushgate/hubs/{hub}/messages/{id}
//	DELETE /pushgate/hubs/{hub}/messages/{id}   (cancels a scheduled send)
//	GET  /pushgate/hubs/{hub}/feedback?cursor=…&limit=…
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.pushgate",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes implements caddy.AdminRouter.
func (adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/pushgate/hubs/", Handler: caddy.AdminHandlerFunc(serveAdmin)}}
}

// adminSend is the body of the admin send, test-send and dry-run endpoints.
type adminSend struct {
	// Format is a ServiceBusNotification-Format value; default template.
	Format string `json:"format"`
	// Tags is a tag expression; absent means broadcast.
	Tags *string `json:"tags"`
	// Body is the template properties, or the native payload.
	Body json.RawMessage `json:"body"`
	// Schedule, when set, is when to send (RFC 3339).
	Schedule string `json:"schedule,omitempty"`
}

func apiErr(err error) error { return caddy.APIError{HTTPStatus: statusOf(err), Err: err} }

func serveAdmin(w http.ResponseWriter, r *http.Request) error {
	rest := strings.TrimPrefix(r.URL.Path, "/pushgate/hubs/")
	name, action, _ := strings.Cut(rest, "/")
	appIface, err := caddy.ActiveContext().AppIfConfigured("pushgate")
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("pushgate is not configured")}
	}
	app := appIface.(*App)
	hub, ok := app.Hub(name)
	if !ok {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no hub %q", name)}
	}
	w.Header().Set("Content-Type", "application/json")
	if id, ok := strings.CutPrefix(action, "messages/"); ok {
		switch r.Method {
		case http.MethodGet:
			o, err := hub.Engine.Outcome(r.Context(), id)
			if err != nil {
				return apiErr(err)
			}
			return json.NewEncoder(w).Encode(outcomeJSON(o))
		case http.MethodDelete:
			if err := hub.Engine.Cancel(r.Context(), id); err != nil {
				return apiErr(err)
			}
			return json.NewEncoder(w).Encode(map[string]string{"cancelled": id})
		}
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("GET or DELETE")}
	}
	if action == "feedback" {
		if r.Method != http.MethodGet {
			return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("GET")}
		}
		limit := 100
		if v := r.URL.Query().Get("limit"); v != "" {
			if _, err := fmt.Sscan(v, &limit); err != nil || limit < 1 || limit > 1000 {
				return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("limit is 1..1000")}
			}
		}
		evs, next, err := hub.Engine.Feedback(r.Context(), r.URL.Query().Get("cursor"), limit)
		if err != nil {
			return apiErr(err)
		}
		return json.NewEncoder(w).Encode(map[string]any{"events": evs, "next": next})
	}
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method not allowed")}
	}
	var req adminSend
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("malformed JSON: %v", err)}
	}
	n, err := notificationOf(hub.Core, req)
	if err != nil {
		return apiErr(err)
	}
	send := fanout.Send{Notification: n, Broadcast: req.Tags == nil}
	if req.Tags != nil {
		send.ExprSource = *req.Tags
	}
	switch action {
	case "send":
		if req.Schedule != "" {
			at, err := time.Parse(time.RFC3339, req.Schedule)
			if err != nil {
				return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("schedule: %v", err)}
			}
			send.At = at
		}
		id, err := hub.Engine.Submit(r.Context(), send)
		if err != nil {
			return apiErr(err)
		}
		w.WriteHeader(http.StatusAccepted)
		return json.NewEncoder(w).Encode(map[string]string{"notificationId": id})
	case "test-send":
		res, err := hub.Engine.TestSend(r.Context(), send)
		if err != nil {
			return apiErr(err)
		}
		return json.NewEncoder(w).Encode(map[string]any{"results": res})
	case "dry-run":
		q := hubcore.AudienceQuery{Expr: n.Expr, Template: n.Format == payload.Template}
		if !q.Template {
			q.Platform, _ = hubcore.PlatformOf(n.Format)
		}
		dr, err := hub.Core.DryRun(r.Context(), q)
		if err != nil {
			return apiErr(err)
		}
		return json.NewEncoder(w).Encode(map[string]any{"targets": dr.Targets, "plan": tagexpr.Explain(dr.Plan)})
	}
	return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("unknown action %q (send, test-send, dry-run, messages/{id}, feedback)", action)}
}

// outcomeJSON is a send's outcome as the admin API shows it.
func outcomeJSON(o *fanout.Outcome) map[string]any {
	m := map[string]any{"notificationId": o.ID, "state": o.State, "enqueueTime": o.Enqueued, "targets": o.Targets, "counts": o.Counts,
		"parts": o.Parts, "partsDone": o.PartsDone}
	if !o.At.Equal(o.Enqueued) {
		m["scheduledTime"] = o.At
	}
	if !o.Started.IsZero() {
		m["startTime"] = o.Started
	}
	if !o.Ended.IsZero() {
		m["endTime"] = o.Ended
	}
	return m
}

func notificationOf(h *hubcore.Hub, req adminSend) (hubcore.Notification, error) {
	f := payload.Template
	if req.Format != "" {
		var err error
		if f, err = payload.ParseFormat(req.Format); err != nil {
			return hubcore.Notification{}, &hubcore.Error{Code: hubcore.CodeInvalid, Field: "format", Reason: err.Error()}
		}
	}
	n := hubcore.Notification{Format: f, Body: req.Body}
	if len(n.Body) == 0 {
		n.Body = []byte("{}")
	}
	if req.Tags != nil {
		e, err := h.ParseExpression(*req.Tags)
		if err != nil {
			return n, err
		}
		n.Expr = e
	}
	return n, nil
}

// logSender is the log-only delivery target: each notification is logged
// instead of sent, handle shortened. It is what a hub delivers to until
// push service credentials are configured.
func logSender(log *zap.Logger) hubcore.Sender {
	return hubcore.SenderFunc(func(_ context.Context, d *hubcore.Delivery) error {
		handle := d.Channel.Key(d.Platform)
		if len(handle) > 12 {
			handle = handle[:12] + "…"
		}
		log.Info("notification (log-only delivery)",
			zap.String("platform", string(d.Platform)), zap.String("installation", d.InstallationID),
			zap.String("registration", d.RegistrationID), zap.String("handle", handle),
			zap.ByteString("body", d.Body))
		return nil
	})
}

// Interface guard.
var _ caddy.AdminRouter = adminAPI{}
