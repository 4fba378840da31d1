// Command gatebench loads a running pushgate with device registrations (or
// any route, for the baseline) over HTTPS/HTTP2 and reports throughput and
// latency percentiles. It only talks to the URL it is given; bench/gate.sh
// runs it against a server on loopback.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushgate/pushgate/internal/nhwire"
)

func main() {
	base := flag.String("url", "https://localhost:8443", "server base URL (loopback)")
	path := flag.String("path", "/push/installations/", "route; installation PUTs append an id")
	mode := flag.String("mode", "put", "put: PUT an installation per request; get: GET the path")
	token := flag.String("token", "", "bearer token")
	sas := flag.String("sas", "", "RULE:KEY: authenticate with a Notification Hubs shared access signature instead of a bearer token")
	query := flag.String("query", "", "query string appended to every request URL (e.g. api-version=2020-06)")
	conc := flag.Int("c", 32, "concurrent requests")
	dur := flag.Duration("d", 10*time.Second, "duration")
	rate := flag.Int("rate", 0, "requests per second in total (0: as fast as possible)")
	ids := flag.Int("ids", 10000, "distinct installation ids to cycle through")
	flag.Parse()
	if !strings.HasPrefix(*base, "https://localhost") && !strings.HasPrefix(*base, "https://127.") {
		fmt.Fprintln(os.Stderr, "gatebench only targets loopback")
		os.Exit(2)
	}
	auth := ""
	if *token != "" {
		auth = "Bearer " + *token
	}
	if *sas != "" {
		rule, key, ok := strings.Cut(*sas, ":")
		if !ok {
			fmt.Fprintln(os.Stderr, "-sas wants RULE:KEY")
			os.Exit(2)
		}
		// Signed for the namespace root, as the SDKs do, valid for the run.
		auth = nhwire.Sign(*base+"/", rule, []byte(key), time.Now().Add(*dur+time.Hour))
	}
	suffix := ""
	if *query != "" {
		suffix = "?" + *query
	}
	// HTTP/2 over TLS, as devices and SDKs connect; the test server's
	// certificate comes from Caddy's internal CA.
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	var tick <-chan time.Time
	if *rate > 0 {
		t := time.NewTicker(time.Second / time.Duration(*rate))
		defer t.Stop()
		tick = t.C
	}
	var n, errs atomic.Int64
	lat := make([][]time.Duration, *conc)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				if tick != nil {
					select {
					case <-tick:
					case <-ctx.Done():
						return
					}
				}
				var req *http.Request
				if *mode == "put" {
					// Each worker cycles through its own share of the
					// ids, as each device writes its own installation:
					// the load measures throughput, not contention on
					// one record.
					share := max(*ids / *conc, 1)
					id := fmt.Sprintf("bench-%d", (w*share+i%share)%*ids)
					body := fmt.Sprintf(`{"installationId":%q,"platform":"fcmv1","pushChannel":"tok:%s","tags":["event:comment","lang:en","event:like"]}`, id, id)
					req, _ = http.NewRequestWithContext(ctx, "PUT", *base+*path+id+suffix, strings.NewReader(body))
				} else {
					req, _ = http.NewRequestWithContext(ctx, "GET", *base+*path+suffix, nil)
				}
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
				t0 := time.Now()
				res, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					if errs.Add(1) <= 3 {
						fmt.Fprintf(os.Stderr, "%s %s: %d %s\n", req.Method, req.URL.Path, res.StatusCode, body)
					}
					continue
				}
				lat[w] = append(lat[w], time.Since(t0))
				n.Add(1)
			}
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	pct := func(p float64) time.Duration {
		if len(all) == 0 {
			return 0
		}
		return all[int(float64(len(all)-1)*p)]
	}
	fmt.Printf("mode=%s c=%d rate=%d requests=%d errors=%d rps=%.0f p50=%v p99=%v max=%v\n",
		*mode, *conc, *rate, n.Load(), errs.Load(), float64(n.Load())/elapsed.Seconds(), pct(0.5), pct(0.99), pct(1))
	if errs.Load() > 0 {
		os.Exit(1)
	}
}
