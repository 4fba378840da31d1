package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/payload"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI adds operator endpoints to Caddy's admin API (local-only by
// default): a send with the log-only delivery target, and a dry run that
// explains an audience. Backends send through the Notification Hubs API;
// these exist so an operator can try and debug a hub from the machine.
//
//	POST /pushgate/hubs/{hub}/send     {"format":"template","tags":"a && b","body":{...}}
//	POST /pushgate/hubs/{hub}/dry-run  {"format":"template","tags":"a && b"}
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

// adminSend is the body of the admin send and dry-run endpoints.
type adminSend struct {
	// Format is a ServiceBusNotification-Format value; default template.
	Format string `json:"format"`
	// Tags is a tag expression; absent means broadcast.
	Tags *string `json:"tags"`
	// Body is the template properties, or the native payload.
	Body json.RawMessage `json:"body"`
}

func serveAdmin(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method not allowed")}
	}
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
	var req adminSend
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("malformed JSON: %v", err)}
	}
	n, err := notificationOf(hub.Core, req)
	if err != nil {
		return caddy.APIError{HTTPStatus: statusOf(err), Err: err}
	}
	switch action {
	case "send":
		out, err := hub.Core.Send(r.Context(), n, logSender(app.logger.Named("delivery").With(zap.String("hub", name))))
		if err != nil {
			return caddy.APIError{HTTPStatus: statusOf(err), Err: err}
		}
		return json.NewEncoder(w).Encode(out)
	case "dry-run":
		q := hubcore.AudienceQuery{Expr: n.Expr, Template: n.Format == payload.Template}
		if !q.Template {
			q.Platform, _ = hubcore.PlatformOf(n.Format)
		}
		dr, err := hub.Core.DryRun(r.Context(), q)
		if err != nil {
			return caddy.APIError{HTTPStatus: statusOf(err), Err: err}
		}
		return json.NewEncoder(w).Encode(map[string]any{"targets": dr.Targets, "plan": tagexpr.Explain(dr.Plan)})
	}
	return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("unknown action %q (send, dry-run)", action)}
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
