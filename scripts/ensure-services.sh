#!/usr/bin/env bash
# Install the PostgreSQL and Redis server binaries the tests need, if they are missing, and
# Chromium (a headless browser renders /docs offline in a test).
# The tests start (and stop) their own servers on 127.0.0.1 in temporary directories.
set -euo pipefail

have_pg() { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
have_redis() { command -v redis-server >/dev/null 2>&1; }
have_chromium() { command -v chromium >/dev/null 2>&1; }

missing=()
have_pg || missing+=(postgresql)
have_redis || missing+=(redis-server)
have_chromium || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-services: need ${missing[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "ensure-services: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts the packaged clusters/daemons; the tests use their own.
  (command -v service >/dev/null && service postgresql stop >/dev/null 2>&1) || true
  (command -v service >/dev/null && service redis-server stop >/dev/null 2>&1) || true
fi
have_pg && have_redis && have_chromium && echo "ensure-services: postgresql, redis-server and chromium present"
