#!/usr/bin/env bash
# install-deps.sh: install what listcast needs to build, run and test on Debian bookworm.
# Idempotent: installs only the packages that are missing; safe to run again and again.
# Needs root (apt-get). Set LISTCAST_SKIP_DEPS=1 to skip entirely.
set -euo pipefail

[ "${LISTCAST_SKIP_DEPS:-0}" = 1 ] && exit 0

PKGS=(
  build-essential cmake pkg-config        # toolchain
  libhiredis-dev                          # Redis client
  libc-ares-dev                           # async DNS (MX lookups)
  libgnutls28-dev                         # TLS and HMAC
  libgmp-dev                              # DKIM: constant-time modular exponentiation (common/lc_dkim.c)
  libmicrohttpd-dev                       # admin web UI / JSON API
  libgmime-3.0-dev                        # MIME parsing of bounces (bounce/)
  redis-server                            # the store (embedded by `listcast up`)
  dnsmasq-base                            # tests: a DNS server for the test MX records
  python3                                 # tests: orchestration, fake MX hosts
  clang                                   # fuzz targets (libFuzzer)
  chromium nodejs                         # browser tests of the web UI (playwright-core drives chromium)
  wrk                                     # bench/webui.sh: HTTP load generator
  gnutls-bin                              # tests: certtool makes listd's STARTTLS test certificates
  openssl                                 # tests: the sender tests make MX certificates with it
  python3-dkim                            # tests: dkimpy, the independent DKIM verifier of tests/dkim_test.py
)
# npm for the browser tests' playwright-core (tests/browser); some nodejs packages carry npm themselves.
command -v npm >/dev/null 2>&1 || PKGS+=(npm)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing packages: ${missing[*]} (run as root, or install them yourself)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Do not let package scripts start services (redis-server) on install.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created_policy=1
fi
trap '[ $created_policy = 1 ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
