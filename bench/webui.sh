#!/usr/bin/env bash
# webui.sh: benchmark of listcast-webui (issue 6 "Performance"). Prints figures; it is not a pass/fail test.
#
#   bash bench/webui.sh                 # builds build-webui-release (Release, no sanitizers) if needed
#   BUILD=build-xyz N=200000 bash bench/webui.sh
#
# Starts its own redis-server (unix socket) and listcast-webui on loopback in a temporary directory, makes an
# admin and an API token, creates a list and imports N (default 1,000,000) subscribers through the CSV import API
# (streamed), then measures:
#   - the CSV import rate (rows/s);
#   - the latency of the HTML subscriber page (50 rows) at the start, in the middle (prefix search) and deep in
#     the list (paging with after=), median and worst of 20 requests each (target: under 200 ms), and of the
#     moderation queue page with 20 held posts among the N subscribers' keys;
#   - requests/s with wrk (2 threads, 32 connections, 10 s each) for the JSON subscriber list, the dashboard,
#     and simple API GETs (/api/lists/LIST, /api/posts/ID) (target: >= 5,000/s on 2 cores).
# Needs wrk and curl (appliance/install-deps.sh installs wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
BUILD=${BUILD:-build-webui-release}
N=${N:-1000000}
DUR=${DUR:-10}
command -v wrk >/dev/null || { echo "webui.sh: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
if [ ! -x "$BUILD/libexec/listcast/listcast-webui" ] || [ ! -x "$BUILD/bin/listcast" ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" --target listcast-webui listcast >/dev/null
fi
BIN=$BUILD/bin/listcast
WEBUI=$BUILD/libexec/listcast/listcast-webui

TMP=$(mktemp -d /tmp/lc-webui-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis-server --port 0 --unixsocket "$TMP/redis.sock" --unixsocketperm 700 --dir "$TMP" --save "" \
  --appendonly no --daemonize no >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -s "$TMP/redis.sock" ping >/dev/null 2>&1 && break; sleep 0.05; done
PORT=$(free_port)
CFG=(--set "redis.url=unix://$TMP/redis.sock" --set "state.dir=$TMP" --set "http.listen=127.0.0.1:$PORT")
"$WEBUI" "${CFG[@]}" 2>"$TMP/webui.log" &
PIDS+=($!)
BASE=http://127.0.0.1:$PORT
for _ in $(seq 100); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.05; done
echo "bench-webui-password" | "$BIN" admin add bench "${CFG[@]}" >/dev/null
TOKEN=$("$BIN" admin token bench "${CFG[@]}")
AUTH="Authorization: Bearer $TOKEN"
LIST=bench@lists.test

curl -sf -H "$AUTH" -d "{\"address\":\"$LIST\",\"policy\":\"open\"}" "$BASE/api/lists" >/dev/null
# a few posts, so the dashboard has something to draw
for i in $(seq 1 20); do
  redis-cli -s "$TMP/redis.sock" HSET "lc:post:$i" id "$i" list "$LIST" from editor@example.test state done \
    created "$(( $(date +%s) - 100 * (21 - i) ))" recipients "$N" delivered "$(( N - 100 * i ))" bounced "$(( 100 * i ))" \
    deferred 0 size 5000 >/dev/null
  redis-cli -s "$TMP/redis.sock" ZADD "lc:posts:$LIST" "$(( $(date +%s) - 100 * (21 - i) ))" "$i" >/dev/null
done

echo "== listcast-webui benchmark ($(nproc) cores, build $BUILD, $N subscribers)"
awk -v n="$N" 'BEGIN { print "address,name"; for (i = 0; i < n; i++) printf "reader%07d@d%d.example.org,Reader %d\n", i, i % 1000, i }' \
  >"$TMP/subs.csv"
t0=$(date +%s.%N)
curl -sf -H "$AUTH" -H "Content-Type: text/csv" --data-binary @"$TMP/subs.csv" "$BASE/api/lists/$LIST/import" \
  >"$TMP/import.json"
t1=$(date +%s.%N)
python3 - "$TMP/import.json" "$t0" "$t1" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1])); dt = float(sys.argv[3]) - float(sys.argv[2])
print(f"csv import: {j['rows']} rows, {j['added']} added, {j['refused']} refused in {dt:.1f} s = {j['rows'] / dt:,.0f} rows/s")
EOF

latency() { # NAME URL: median and worst of 20 requests, in ms
  local name=$1 url=$2 t=()
  for _ in $(seq 20); do
    t+=("$(curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -H "$AUTH" "$url")")
  done
  printf '%s\n' "${t[@]}" | python3 -c '
import sys
rows = [l.split() for l in sys.stdin if l.strip()]
codes = "/".join(sorted({r[0] for r in rows})); ms = sorted(float(r[1]) * 1000 for r in rows)
print(f"{sys.argv[1]}: median {ms[len(ms)//2]:.1f} ms, worst {ms[-1]:.1f} ms (HTTP {codes}; target < 200 ms)")' "$name"
}
latency "subscriber page, first 50 of $N" "$BASE/lists/$LIST/subscribers"
latency "subscriber page, prefix search reader05" "$BASE/lists/$LIST/subscribers?prefix=reader05"
latency "subscriber page, after reader0999000" "$BASE/lists/$LIST/subscribers?after=reader0999000@d0.example.org"
latency "JSON subscribers, 1000 rows" "$BASE/api/lists/$LIST/subscribers?limit=1000&prefix=reader07"
# 20 posts held for moderation, written as listd holds them (the hash and the queue's index)
for i in $(seq 101 120); do
  redis-cli -s "$TMP/redis.sock" HSET "lc:held:$i" list "$LIST" from stranger@example.test size 60 \
    created "$(date +%s)" msg "$(printf 'Subject: held %d\r\n\r\nbody\r\n' "$i")" >/dev/null
  redis-cli -s "$TMP/redis.sock" ZADD lc:heldidx "$i" "$i" >/dev/null
done
latency "moderation queue page, 20 held posts" "$BASE/moderation"

rps() { # NAME PATH
  local out
  out=$(wrk -t2 -c32 -d"${DUR}s" -H "$AUTH" "$BASE$2" 2>&1)
  local req lat non2xx
  req=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  lat=$(awk '/Latency/ {print $2; exit}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  printf '%-44s %10s req/s  (mean latency %s%s)\n' "$1" "$req" "$lat" "${non2xx:+, NON-2xx: $non2xx}"
}
echo "-- wrk: 2 threads, 32 connections, ${DUR} s each"
rps "JSON subscriber list (50 rows)" "/api/lists/$LIST/subscribers"
rps "dashboard (HTML, 1 list, 20 posts, charts)" "/"
rps "simple API GET /api/lists/$LIST" "/api/lists/$LIST"
rps "simple API GET /api/posts/20" "/api/posts/20"
rps "/healthz (no auth, one PING)" "/healthz"
