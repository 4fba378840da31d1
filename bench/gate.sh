#!/usr/bin/env bash
# Registration throughput through the whole gate (TLS, JWT verification,
# Rego, store write) against a bare Caddy `respond` route served by the same
# process in the same run, then p99 latency at half the gate's throughput.
#
#   bench/gate.sh [redis|embedded] [seconds per run]     ROUNDS=3 rounds
#   DECISION_CACHE=off bench/gate.sh …   evaluate the policy on every request
#
# Everything runs on loopback: a throwaway redis-server, ./bin/caddy with a
# generated Caddyfile, and bench/gatebench as the client.
set -euo pipefail
cd "$(dirname "$0")/.."
store=${1:-redis}
secs=${2:-15}

make -s build
go build -o bin/gatebench ./bench/gatebench

. bench/lib.sh

hubopts=""
if [ "$store" = redis ]; then
  start_redis
  hubopts="redis 127.0.0.1:$rport"
else
  hubopts="data_dir $tmp/data"
fi

gport=$(freeport); bport=$(freeport); iport=$(freeport); aport=$(freeport)
cat >"$tmp/Caddyfile" <<CADDY
{
	admin 127.0.0.1:$aport
	https_port $gport
	http_port $(freeport)
	skip_install_trust
	log {
		level ERROR
	}
	pushgate {
		dev_issuer 127.0.0.1:$iport
		hub bench {
			$hubopts
		}
	}
}
localhost:$gport {
	tls internal
	pushgate_gate {
		hub bench
		policy policy/examples/per_user
		decision_cache ${DECISION_CACHE:-16384}
		oidc {
			issuer http://127.0.0.1:$iport
			client_id pushgate-dev
		}
	}
	respond "upstream" 200
}
localhost:$bport {
	tls internal
	respond "ok" 200
}
CADDY
start_caddy "https://localhost:$bport/"
token=$(./bin/caddy pushgate dev-token --sub alice --issuer "http://127.0.0.1:$iport" 2>/dev/null)

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(go version | cut -d' ' -f3); store: $store; ${secs}s per run"
# Warm up both routes (TLS sessions, policy, store connections).
./bin/gatebench -url "https://localhost:$bport" -mode get -path / -c 16 -d 2s >/dev/null
./bin/gatebench -url "https://localhost:$gport" -mode put -token "$token" -c 16 -d 2s >/dev/null
# The machine is shared and its speed drifts over a minute: each round
# measures the baseline and the gate back to back; the figure is the median
# of the rounds' ratios, and half load is half the median round's gate.
rounds=${ROUNDS:-3}
ratios=(); gates=()
for r in $(seq "$rounds"); do
  base=$(./bin/gatebench -url "https://localhost:$bport" -mode get -path / -c 32 -d "${secs}s")
  gate=$(./bin/gatebench -url "https://localhost:$gport" -mode put -token "$token" -c 32 -d "${secs}s")
  brps=$(sed -E 's/.* rps=([0-9]+).*/\1/' <<<"$base")
  grps=$(sed -E 's/.* rps=([0-9]+).*/\1/' <<<"$gate")
  ratios+=("$(python3 -c "print(round($grps/$brps, 3))")"); gates+=("$grps")
  echo "round $r"
  echo "  baseline (respond): $base"
  echo "  gate (PUT):         $gate"
  echo "  ratio: ${ratios[-1]}"
done
echo "ratio gate/baseline: median $(median "${ratios[@]}") of ${ratios[*]}"
half=$(( $(median "${gates[@]}" | cut -d. -f1) / 2 ))
[ -n "${PROFILE:-}" ] && { (sleep 2; curl -s "http://127.0.0.1:$aport/debug/pprof/profile?seconds=6" -o "$PROFILE") & prof=$!; ./bin/gatebench -url "https://localhost:$gport" -mode put -token "$token" -c 32 -d 9s >/dev/null; wait "$prof"; }
lat=$(./bin/gatebench -url "https://localhost:$gport" -mode put -token "$token" -c 32 -rate "$half" -d "${secs}s")
echo "gate at half load:  $lat"
if [ "$store" = redis ]; then
  # Where Redis spends its time (per command: calls, µs per call); EXEC
  # counts the gate's reads, EVALSHA its writes.
  echo "redis commandstats:"; redis-cli -p "$rport" info commandstats | grep -E '^cmdstat_(evalsha|exec|hget)' | sed -E 's/cmdstat_([a-z]+):calls=([0-9]+),usec=([0-9]+),usec_per_call=([0-9.]+).*/  \1 calls=\2 usec_per_call=\4/'
fi
