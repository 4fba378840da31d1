// Command caddy is Caddy with the pushgate modules: what `xcaddy build
// --with github.com/pushgate/pushgate` produces, as a main package in this
// module so that `make build` needs no network and pins every dependency
// through go.mod.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/pushgate/pushgate/caddymodule"
)

func main() {
	caddycmd.Main()
}
