#!/usr/bin/env bash
# test.sh: the README's test command. Installs what is missing, builds listcast with warnings as errors under
# AddressSanitizer and UndefinedBehaviorSanitizer, and runs the whole CTest suite (unit, integration, fuzz smoke).
#   bash appliance/test.sh            # everything
#   bash appliance/test.sh -L unit    # extra arguments go to ctest
set -euo pipefail
cd "$(dirname "$0")/.."
bash appliance/install-deps.sh

BUILD=${LISTCAST_TEST_BUILD:-build-test}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Debug -DLISTCAST_WERROR=ON -DLISTCAST_SANITIZE=ON >/dev/null
cmake --build "$BUILD" -j"$(nproc)"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
(cd "$BUILD" && ctest --output-on-failure --timeout 600 "$@")

# Fuzz smoke runs: every libFuzzer target for a few seconds from its seed corpus (clang build, label fuzz).
# LISTCAST_FUZZ_SECONDS=0 skips them; skipped too when ctest arguments were given (a filtered run).
FUZZ_SECONDS=${LISTCAST_FUZZ_SECONDS:-10}
if [ $# -eq 0 ] && [ "$FUZZ_SECONDS" != 0 ]; then
  FUZZ_BUILD=${LISTCAST_FUZZ_BUILD:-build-fuzz}
  CC=clang cmake -S . -B "$FUZZ_BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLISTCAST_FUZZ=ON \
    -DLISTCAST_FUZZ_SECONDS="$FUZZ_SECONDS" >/dev/null
  cmake --build "$FUZZ_BUILD" -j"$(nproc)"
  (cd "$FUZZ_BUILD" && ctest --output-on-failure -L fuzz)
fi
