#!/usr/bin/env bash
# The PostgreSQL suite: the store story and every platform flow test again, on the machine's
# PostgreSQL, each test in a fresh schema.
set -euo pipefail
url="${OPENVEND_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}"
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "PostgreSQL is not running; starting it"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
OPENVEND_TEST_POSTGRES="$url" cargo test -p openvend --locked --test it -- --include-ignored
