# Building Caddy with the pushgate modules. Included by the Makefile.
#
# `make build` compiles ./cmd/caddy, the equivalent of
# `xcaddy build --with github.com/pushgate/pushgate=.`, from this module's
# go.mod, so it needs no network once the module cache is warm.
# `make xcaddy` does the same through xcaddy itself (pinned), for those who
# want the canonical tool.

BIN        ?= bin/caddy
XCADDY     ?= github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.4
CADDY_VERSION ?= v2.11.9

.PHONY: build xcaddy run

build:
	$(GO) build -o $(BIN) ./cmd/caddy

xcaddy:
	$(GO) run $(XCADDY) build $(CADDY_VERSION) --output $(BIN) --with github.com/pushgate/pushgate=.

# Serves Caddyfile.example on https://localhost:8443 with the embedded store
# and the development issuer (see README).
run: build
	$(BIN) run --config Caddyfile.example --adapter caddyfile
