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

# Each test makes a schema named t<pid>_<n>_<nanos>. Those of test processes that are gone
# (this run's, once it ends, and any an interrupted run left) are dropped, so the database
# does not grow run after run; a run still going keeps its own.
drop_finished_schemas() {
  command -v psql >/dev/null || return 0
  psql "$url" -Atqc "SELECT nspname FROM pg_namespace WHERE nspname ~ '^t[0-9]+_[0-9]+_[0-9]+$'" |
    while read -r schema; do
      pid="${schema#t}"
      pid="${pid%%_*}"
      [ -d "/proc/$pid" ] || psql "$url" -qc "SET client_min_messages = warning; DROP SCHEMA $schema CASCADE" >/dev/null
    done
}
drop_finished_schemas
status=0
OPENVEND_TEST_POSTGRES="$url" cargo test -p openvend --locked --test it -- --include-ignored || status=$?
drop_finished_schemas
exit "$status"
