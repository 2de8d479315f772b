#!/usr/bin/env bash
# demo.sh: the README's "try it": build listcast and run the appliance with a demo list and a local mailbox.
#
#   bash appliance/demo.sh
#
# 1. installs missing packages (appliance/install-deps.sh; LISTCAST_SKIP_DEPS=1 skips it);
# 2. configures and builds into ./build (Release, no sanitizers; incremental on re-runs);
# 3. starts the demo mailbox, tests/fakemx.py on 127.0.0.1:2526: it accepts every message and stores it
#    under demo-state/mailbox (one line per delivery in demo-state/mailbox.jsonl);
# 4. runs `listcast up --demo` in the foreground with its state in ./demo-state and every delivery relayed to
#    that mailbox (sender.relay), so nothing leaves the machine. The demo list demo@listcast.test has three
#    subscribers; listcast prints how to post to it. The admin web UI is on http://127.0.0.1:8025/.
# Ctrl-C stops listcast (it stops its daemons and Redis) and then the mailbox.
# Re-runnable: the state and the demo list are kept between runs; rm -rf demo-state for a fresh start.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
state=$root/demo-state
mx_addr=127.0.0.1:2526

bash appliance/install-deps.sh

echo "demo: building into $root/build (Release) ..." >&2
mkdir -p build
if ! cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DLISTCAST_SANITIZE=OFF -DLISTCAST_WERROR=OFF \
        >build/demo-configure.log 2>&1; then
    cat build/demo-configure.log >&2
    echo "demo: cmake configure failed (log above)" >&2
    exit 1
fi
cmake --build build -j"$(nproc)"

if [ ! -f tests/fakemx.py ]; then
    echo "demo: tests/fakemx.py is missing: cannot start the demo mailbox" >&2
    exit 1
fi
mkdir -p "$state/mailbox"
: >"$state/mailbox.out"
python3 -u tests/fakemx.py --listen "$mx_addr" --log "$state/mailbox.jsonl" --maildir "$state/mailbox" \
    >"$state/mailbox.out" 2>&1 &
mx_pid=$!

cleanup() {
    if kill -0 "$mx_pid" 2>/dev/null; then
        kill "$mx_pid" 2>/dev/null || true
        wait "$mx_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT   # a Ctrl-C before listcast runs: stop here (the EXIT trap stops the mailbox)
trap 'exit 143' TERM

for _ in $(seq 100); do   # at most 10 s
    grep -q ready "$state/mailbox.out" && break
    if ! kill -0 "$mx_pid" 2>/dev/null; then
        cat "$state/mailbox.out" >&2
        echo "demo: the mailbox did not start (is $mx_addr in use?)" >&2
        exit 1
    fi
    sleep 0.1
done
if ! grep -q ready "$state/mailbox.out"; then
    echo "demo: the mailbox did not say ready within 10 s" >&2
    exit 1
fi
echo "demo: mailbox on $mx_addr; delivered messages land in $state/mailbox" >&2

# listcast takes Ctrl-C itself (its daemons are in their own process groups) and stops in order; this shell
# only waits for it (a no-op trap, not an ignored signal, which listcast would inherit) and then stops the
# mailbox.
trap ':' INT TERM
status=0
build/bin/listcast up --demo --set "state.dir=$state" --set "sender.relay=$mx_addr" || status=$?
exit "$status"
