#!/usr/bin/env bash
# Installation PUT throughput through the Notification Hubs API (TLS, SAS
# verification, validation, store write) on the embedded store and on
# Redis, against a bare Caddy `respond` route served by the same process in
# the same run.
#
#   bench/nhput.sh [seconds per run]      ROUNDS=3 rounds, C=32 concurrent requests
#
# Everything runs on loopback: a throwaway redis-server, ./bin/caddy with a
# generated Caddyfile (two hubs, one per store), and bench/gatebench as the
# client.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
conc=${C:-32}   # concurrent requests, the same for every route

make -s build
go build -o bin/gatebench ./bench/gatebench

. bench/lib.sh

start_redis

key=$(head -c 32 /dev/urandom | base64)
nport=$(freeport); bport=$(freeport); aport=$(freeport)
cat >"$tmp/Caddyfile" <<CADDY
{
	admin 127.0.0.1:$aport
	https_port $nport
	http_port $(freeport)
	skip_install_trust
	log {
		level ERROR
	}
	pushgate {
		hub embedded {
			data_dir $tmp/data
		}
		hub redis {
			redis 127.0.0.1:$rport
		}
	}
}
localhost:$nport {
	tls internal
	pushgate_nh /embedded/* {
		hub embedded
		rule DefaultFullSharedAccessSignature $key Listen Send Manage
	}
	pushgate_nh /redis/* {
		hub redis
		rule DefaultFullSharedAccessSignature $key Listen Send Manage
	}
}
localhost:$bport {
	tls internal
	respond "ok" 200
}
CADDY
start_caddy "https://localhost:$bport/"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(go version | cut -d' ' -f3); ${secs}s per run"
put() { ./bin/gatebench -url "https://localhost:$nport" -mode put -path "/$1/installations/" -query api-version=2020-06 \
  -sas "DefaultFullSharedAccessSignature:$key" -c "$conc" -d "$2"; }
rps() { sed -E 's/.* rps=([0-9]+).*/\1/' <<<"$1"; }
# Warm up every route (TLS sessions, store connections).
./bin/gatebench -url "https://localhost:$bport" -mode get -path / -c 16 -d 2s >/dev/null
put embedded 2s >/dev/null
put redis 2s >/dev/null
# The machine is shared and its speed drifts over a minute: each round
# measures the baseline and both stores back to back, and the figure is the
# median of the rounds' ratios.
rounds=${ROUNDS:-3}
er=(); rr=()
for r in $(seq "$rounds"); do
  base=$(./bin/gatebench -url "https://localhost:$bport" -mode get -path / -c "$conc" -d "${secs}s")
  emb=$(put embedded "${secs}s")
  red=$(put redis "${secs}s")
  er+=("$(python3 -c "print(round($(rps "$emb")/$(rps "$base"), 3))")")
  rr+=("$(python3 -c "print(round($(rps "$red")/$(rps "$base"), 3))")")
  echo "round $r"
  echo "  baseline (respond):   $base"
  echo "  PUT, embedded store:  $emb"
  echo "  PUT, Redis store:     $red"
  echo "  ratios: embedded ${er[-1]}, redis ${rr[-1]}"
done
echo "ratio embedded/baseline: median $(median "${er[@]}") of ${er[*]}"
echo "ratio redis/baseline:    median $(median "${rr[@]}") of ${rr[*]}"
# PROFILE=file also takes a CPU profile of Caddy under the Redis PUT load.
if [ -n "${PROFILE:-}" ]; then
  (sleep 2; curl -s "http://127.0.0.1:$aport/debug/pprof/profile?seconds=6" -o "$PROFILE") & prof=$!
  put redis 9s >/dev/null
  wait "$prof"
fi
# Where Redis spends its time (per command: calls, µs per call).
echo "redis commandstats:"; redis-cli -p "$rport" info commandstats | grep -E '^cmdstat_(evalsha|hget|get|pipeline|exec|multi)' | sed -E 's/cmdstat_([a-z]+):calls=([0-9]+),usec=([0-9]+),usec_per_call=([0-9.]+).*/  \1 calls=\2 usec_per_call=\4/'
