package caddymodule

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/pushgate/pushgate/internal/devissuer"
	"github.com/pushgate/pushgate/policy"
	"github.com/pushgate/pushgate/redisstore"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "pushgate",
		Short: "pushgate tools: development tokens and policy evaluation",
		Long: `
pushgate dev-token --sub USER [--issuer URL] [--ttl DURATION] [--access-token --audience AUD]
    Prints a token from the development issuer (the dev_issuer global option)
    for USER. It reads the issuer's key from Caddy's data directory, so run it
    as the user that runs the server, on the same machine.

pushgate policy eval --policy DIR --input FILE
    Evaluates the Rego policies in DIR against the input document in FILE (the
    JSON a policy sees; see policy/examples/per_user/input.json) and prints the
    decision. Exit status 0 when allowed, 1 when denied.

pushgate fsck --redis ADDR[,ADDR...] --hub NAME [--username U] [--password P]
    Checks that a hub stored in Redis is consistent: every record's tag index
    entries, id and handle maps, universe bits and counters agree with the
    records. Read-only. Exit status 0 when consistent, 1 with the list of
    problems otherwise. Several addresses mean a Cluster.
`,
		CobraFunc: func(cmd *cobra.Command) {
			dev := &cobra.Command{
				Use:   "dev-token --sub USER",
				Short: "Print a development-issuer token for USER",
				RunE: func(c *cobra.Command, _ []string) error {
					sub, _ := c.Flags().GetString("sub")
					iss, _ := c.Flags().GetString("issuer")
					ttl, _ := c.Flags().GetDuration("ttl")
					access, _ := c.Flags().GetBool("access-token")
					aud, _ := c.Flags().GetString("audience")
					return devToken(sub, iss, aud, ttl, access)
				},
			}
			dev.Flags().String("sub", "", "the user the token is for (required)")
			dev.Flags().String("issuer", "http://127.0.0.1:8444", "the dev_issuer address, as http://host:port")
			dev.Flags().Duration("ttl", time.Hour, "token lifetime")
			dev.Flags().Bool("access-token", false, "mint an RFC 9068 access token instead of an ID token")
			dev.Flags().String("audience", devissuer.ClientID, "the token's audience")
			pol := &cobra.Command{Use: "policy", Short: "Policy tools"}
			eval := &cobra.Command{
				Use:   "eval --policy DIR --input FILE",
				Short: "Print the decision of the policies in DIR for the input in FILE",
				RunE: func(c *cobra.Command, _ []string) error {
					dir, _ := c.Flags().GetString("policy")
					in, _ := c.Flags().GetString("input")
					if dir == "" || in == "" {
						return fmt.Errorf("--policy and --input are required")
					}
					d, err := policy.EvalFile(context.Background(), dir, in)
					if err != nil {
						return err
					}
					if err := policy.PrintDecision(os.Stdout, d); err != nil {
						return err
					}
					if !d.Allow {
						os.Exit(1)
					}
					return nil
				},
			}
			eval.Flags().String("policy", "", "directory of .rego and data files")
			eval.Flags().String("input", "", "JSON input document")
			pol.AddCommand(eval)
			fsck := &cobra.Command{
				Use:   "fsck --redis ADDR --hub NAME",
				Short: "Check a Redis-stored hub's records against its indexes",
				RunE: func(c *cobra.Command, _ []string) error {
					addrs, _ := c.Flags().GetStringSlice("redis")
					hub, _ := c.Flags().GetString("hub")
					user, _ := c.Flags().GetString("username")
					pass, _ := c.Flags().GetString("password")
					if len(addrs) == 0 || hub == "" {
						return fmt.Errorf("--redis and --hub are required")
					}
					if err := fsckHub(context.Background(), redis.UniversalOptions{Addrs: addrs, Username: user, Password: pass}, hub, os.Stdout); err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(1)
					}
					return nil
				},
			}
			fsck.Flags().StringSlice("redis", nil, "Redis address(es); several mean a Cluster")
			fsck.Flags().String("hub", "", "the hub's name")
			fsck.Flags().String("username", "", "Redis ACL user")
			fsck.Flags().String("password", "", "Redis password")
			cmd.AddCommand(dev, pol, fsck)
		},
	})
}

// fsckHub opens the hub read-only (its recorded layout, no CONFIG change)
// and runs the store's consistency check.
func fsckHub(ctx context.Context, ro redis.UniversalOptions, hub string, out io.Writer) error {
	st, err := redisstore.New(ctx, redisstore.Options{Redis: ro, Hub: hub, NoConfig: true, MustExist: true})
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Check(ctx); err != nil {
		return fmt.Errorf("hub %s: %w", hub, err)
	}
	fmt.Fprintf(out, "hub %s: consistent (%d shards)\n", hub, st.Shards())
	return nil
}

func devToken(sub, issuer, audience string, ttl time.Duration, access bool) error {
	if sub == "" {
		return fmt.Errorf("--sub is required")
	}
	iss, err := devissuer.New(DevIssuerDir(), issuer)
	if err != nil {
		return err
	}
	kind := devissuer.IDToken
	if access {
		kind = devissuer.AccessToken
	}
	tok, err := iss.Mint(sub, nil, ttl, audience, kind)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, devissuer.Warning)
	fmt.Println(tok)
	return nil
}
