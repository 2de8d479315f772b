#!/usr/bin/env bash
# accept.sh: the durable-acceptance benchmark of issue 3 (listd against Postfix's smtpd), one run, two figures.
#
# usage: bench/accept.sh [BUILD_DIR] [N]      (or LC_BUILD_DIR=..., N=...; defaults ./build and 20000)
#
# 1. listd: starts redis-server (appendonly yes, appendfsync always: a 250 means fsync'd; data on disk in a
#    temporary directory under ${TMPDIR:-/var/tmp}) and BUILD/libexec/listcast/listcast-listd with one open list
#    (created with BUILD/bin/listcast), then times Postfix's smtp-source pushing N messages of 4,900 bytes over
#    20 concurrent sessions, a new connection per message, and checks that all N posts are in Redis.
# 2. Postfix: ../shared/bench/peers/postfix-accept.sh N 4900 20 (rewrites /etc/postfix/main.cf, starts and
#    stops Postfix: run it on a dev or bench machine, as root).
# Prints "listd-accept msgs=N seconds=S rate=R/s", "postfix-accept ...", "ratio listd/postfix=X.Y".
# SKIP_POSTFIX=1 measures listd only (for profiling); KEEP=1 keeps the temporary directory (logs).
# Builds nothing: use a release build (no sanitizers), e.g. cmake -S . -B build && cmake --build build.
# Needs smtp-source (Debian postfix: ../shared/bench/peers/ensure-postfix.sh installs it), redis-server,
# python3. Exits 1 if a post is missing or a step fails. Everything it starts is stopped on exit.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
PEERS=${LC_PEERS_DIR:-$SRC/../shared/bench/peers}
BUILD=${1:-${LC_BUILD_DIR:-./build}}
N=${2:-${N:-20000}}
SIZE=4900
SESSIONS=20
LIST=list@lists.example.org
BUILD=$(cd "$BUILD" && pwd)
LISTD=$BUILD/libexec/listcast/listcast-listd
CLI=$BUILD/bin/listcast
for f in "$LISTD" "$CLI"; do
  [ -x "$f" ] || { echo "accept.sh: $f not found: build first (cmake --build $BUILD)" >&2; exit 1; }
done
[ "$N" -ge 1 ] && [ "$N" -le 1000000 ] || { echo "accept.sh: N must be 1..1000000" >&2; exit 2; }
"$PEERS/ensure-postfix.sh"
command -v smtp-source >/dev/null || { echo "accept.sh: smtp-source missing" >&2; exit 1; }

W=$(mktemp -d "${TMPDIR:-/var/tmp}/lc-accept.XXXXXX")
REDIS_PID=; LISTD_PID=
cleanup() {
  [ -n "$LISTD_PID" ] && kill "$LISTD_PID" 2>/dev/null && wait "$LISTD_PID" 2>/dev/null || true
  [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] && echo "# kept $W" >&2 || rm -rf "$W"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for WHAT CMD...: up to 10 s
  local what=$1; shift
  for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "accept.sh: $what did not come up" >&2; exit 1
}

# --- Redis, durable: fsync before every reply that follows a write ----------------------------------------
mkdir -p "$W/redis"
redis-server --port 0 --unixsocket "$W/redis/redis.sock" --unixsocketperm 700 --dir "$W/redis" --save "" \
  --appendonly yes --appendfsync always --daemonize no >"$W/redis.log" 2>&1 &
REDIS_PID=$!
URL="unix://$W/redis/redis.sock"
wait_for redis redis-cli -s "$W/redis/redis.sock" PING
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$W/secret"; echo >>"$W/secret"; chmod 600 "$W/secret"
SETS=(--set "redis.url=$URL" --set "state.dir=$W" --set "secret.file=$W/secret")
"$CLI" "${SETS[@]}" list create "$LIST" --policy open >/dev/null

# --- listd ----------------------------------------------------------------------------------------------------
PORT=$(free_port)
"$LISTD" "${SETS[@]}" --set "smtp.listen=127.0.0.1:$PORT" --set smtp.hostname=lists.example.org \
  --set smtp.max_sessions_per_ip=1000 --set smtp.max_sessions=1000 >"$W/listd.log" 2>&1 &
LISTD_PID=$!
wait_for listd python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1).close()"

before=$("$CLI" "${SETS[@]}" --json list show "$LIST" | python3 -c 'import json,sys; print(json.load(sys.stdin)["posts"])')
t0=$(date +%s.%N)
smtp-source -s $SESSIONS -l $SIZE -m "$N" -f poster@example.org -t "$LIST" "127.0.0.1:$PORT"
t1=$(date +%s.%N)
after=$("$CLI" "${SETS[@]}" --json list show "$LIST" | python3 -c 'import json,sys; print(json.load(sys.stdin)["posts"])')
stored=$((after - before))
kill "$LISTD_PID"; wait "$LISTD_PID" 2>/dev/null || true; LISTD_PID=
kill "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null || true; REDIS_PID=
if [ "$stored" -ne "$N" ]; then
  echo "accept.sh: $stored posts in Redis, $N sent" >&2; tail -5 "$W/listd.log" >&2; exit 1
fi
python3 -c "n=$N; t=$t1-$t0; print(f'listd-accept msgs={n} seconds={t:.2f} rate={n/t:.0f}/s stored=$stored')"
LR=$(python3 -c "print(f'{$N/($t1-$t0):.1f}')")

# --- Postfix, same machine, same load -------------------------------------------------------------------------
[ "${SKIP_POSTFIX:-0}" = 1 ] && exit 0
PLINE=$("$PEERS/postfix-accept.sh" "$N" $SIZE $SESSIONS | tail -1)
echo "$PLINE"
PR=$(echo "$PLINE" | sed -n 's/.*rate=\([0-9.]*\)\/s.*/\1/p')
python3 -c "print(f'ratio listd/postfix={$LR/$PR:.1f}')"
