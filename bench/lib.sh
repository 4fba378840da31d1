# Sourced by the bench scripts: a scratch directory and the processes
# started in it, both cleaned up on exit; free loopback ports; a throwaway
# redis-server; ./bin/caddy running a generated Caddyfile.

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_redis: a redis-server without persistence on a free port ($rport).
start_redis() {
  rport=$(freeport)
  redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" >"$tmp/redis.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
}

# start_caddy URL: ./bin/caddy with $tmp/Caddyfile (its data and config in
# $tmp), until URL answers.
start_caddy() {
  export XDG_DATA_HOME="$tmp/xdg" XDG_CONFIG_HOME="$tmp/xdg"
  ./bin/caddy run --config "$tmp/Caddyfile" --adapter caddyfile >"$tmp/caddy.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -sk "$1" >/dev/null 2>&1 && break; sleep 0.1; done
}

# median X...: the median of numbers.
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
