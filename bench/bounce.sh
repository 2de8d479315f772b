#!/bin/sh
# bench/bounce.sh: bounce parser and bounce pipeline figures (issue 5).
#
# Usage: sh bench/bounce.sh [SECONDS] [N_BOUNCES] [CONNECTIONS]
#   LC_BENCH_BUILD=DIR: the release tree to (re)build and use (default build-bench-bounce/ in the checkout)
#   1. builds a release tree (no sanitizers) there and bench/bounce_bench.c against it;
#   2. parse+classify messages/s on one core over shared/corpus/bounces/eml (looped for SECONDS, default 5);
#   3. Sisimai (Perl, Debian libsisimai-perl, installed here when missing and run as root) on the same files
#      in the same run, and the ratio of the two per-CPU-second rates (both on core 0);
#   4. end-to-end bounces/s: DSNs over SMTP to VERP addresses -> listd -> Redis (appendfsync always) ->
#      listcast-bounce -> every subscriber hash updated (bench/bounce_e2e.py, N_BOUNCES default 5000);
#   5. the same N DSNs accepted first, then listcast-bounce started: the daemon's own bounces/s (--drain).
# Prints the figures; exits non-zero only if something could not run.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
corpus=${LC_SHARED_DIR:-$src/../shared}/corpus/bounces/eml
secs=${1:-5}
n=${2:-5000}
conns=${3:-16}
build=${LC_BENCH_BUILD:-$src/build-bench-bounce}

cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLISTCAST_SANITIZE=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target lc_bounce listcast listcast-listd listcast-bounce >/dev/null
cc -O2 -o "$build/bounce_bench" "$here/bounce_bench.c" -I"$src/bounce" "$build/bounce/liblc_bounce.a" \
    $(pkg-config --cflags --libs gmime-3.0)

files=$(ls "$corpus"/*.eml | wc -l)
echo "== parse+classify, one core, $files corpus files looped for ${secs}s (taskset -c 0)"
ours=$(taskset -c 0 "$build/bounce_bench" -s "$secs" "$corpus"/*.eml)
echo "$ours"

echo "== Sisimai (Perl) on the same $files files"
if ! perl -MSisimai -e1 2>/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian libsisimai-perl for the side-by-side figure" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libsisimai-perl >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null 2>&1 &&
          DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libsisimai-perl >/dev/null 2>&1; } || true
fi
if perl -MSisimai -e1 2>/dev/null; then
    theirs=$(taskset -c 0 perl -MSisimai -MTime::HiRes=time -e '
        my @f = @ARGV; my ($n, $t0, $c0) = (0, time, (times)[0] + (times)[1]);
        while (time - $t0 < '"$secs"') { for my $p (@f) { my $v = Sisimai->make($p); $n++ } }
        my ($dt, $cpu) = (time - $t0, (times)[0] + (times)[1] - $c0);
        printf "messages %d seconds %.2f rate %.0f/s wall, cpu %.2f s: %.0f/s per CPU second (Sisimai %s)\n",
            $n, $dt, $n / $dt, $cpu, $n / $cpu, $Sisimai::VERSION;
    ' "$corpus"/*.eml)
    echo "$theirs"
    a=$(echo "$ours" | sed -n 's/.*: \([0-9]*\)\/s per CPU second.*/\1/p')
    b=$(echo "$theirs" | sed -n 's/.*: \([0-9]*\)\/s per CPU second.*/\1/p')
    if [ -n "$a" ] && [ -n "$b" ] && [ "$b" -gt 0 ]; then
        awk -v a="$a" -v b="$b" 'BEGIN { printf "ratio %.1fx Sisimai (per CPU second)\n", a / b }'
    fi
else
    echo "Sisimai not installed (apt-get install libsisimai-perl); skipped"
fi

echo "== end to end: $n DSNs over SMTP -> listd -> Redis (appendfsync always) -> listcast-bounce"
python3 "$here/bounce_e2e.py" "$build" "$n" "$conns"
echo "== listcast-bounce alone: $n DSNs accepted first, then the daemon started (its own rate, listd not in the way)"
python3 "$here/bounce_e2e.py" "$build" "$n" "$conns" --drain
