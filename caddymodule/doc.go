// Package caddymodule is pushgate's Caddy integration: the app module that
// owns the hub core (store connection, delivery workers, scheduler), the
// device-facing gatekeeper handler, the Notification Hubs-compatible backend
// API handler, and their Caddyfile directives.
//
// Not built yet: it arrives with the gatekeeper issue (#4) and the backend
// API issue (#6). Its dependency rule is fixed already: hubcore never imports
// this package or Caddy; this package adapts hubcore to HTTP and is the one
// place where hubcore.Code becomes an HTTP status.
package caddymodule
