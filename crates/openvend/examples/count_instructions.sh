#!/usr/bin/env bash
# Instructions the server executes per sale, apart from the signature, counted by callgrind.
# Unlike CPU time on a shared machine (10% apart from run to run here), the count of one build
# repeats to within a few tenths of a percent, so two builds can be told apart by changes far
# smaller than the noise of `compare_load.sh`.
#
#   cargo build --release -p openvend --bins --examples
#   crates/openvend/examples/count_instructions.sh /tmp/openvend-before target/release/openvend
#
# Each build serves 20 simulated machines buying 10 times a second (SQLite, the sandbox as
# the gateway) under `valgrind --tool=callgrind`. Counted: from 10 s after the first sale to
# just after the last one ended (so no signature is half done at either end; the load
# benchmark pauses there). Printed per build: the sales in that window (precreate signatures
# made) and the user-space instructions per sale, the signature's left out. "Per sale" is per
# sale at 10 a second under valgrind's pace: the server's timers (the 100 ms held-ack flush,
# the job sweep) are spread over those sales. Not seen: the kernel's work (system calls, the
# loopback network, the page cache), and the signature and SHA-256 as the server runs them
# (under valgrind aws-lc takes its AVX2 code, not AVX-512 or SHA-NI).
# Needs valgrind (Debian package `valgrind`).
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 BIN [BIN...]" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind not found: apt-get install valgrind" >&2; exit 2; }
load="$(dirname "$0")/../../../target/release/examples/load"
[ -x "$load" ] || { echo "$load not found: cargo build --release -p openvend --examples" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The load benchmark starts `BIN sandbox` and `BIN serve`: only the server runs under callgrind.
cat > "$work/wrap" <<'EOF'
#!/usr/bin/env bash
if [ "$1" = "serve" ]; then
  exec valgrind --tool=callgrind --callgrind-out-file="$COUNT_OUT" "$COUNT_BIN" "$@" 2>/dev/null
fi
exec "$COUNT_BIN" "$@"
EOF
chmod +x "$work/wrap"

for bin in "$@"; do
  [ -x "$bin" ] || { echo "$bin is not an executable" >&2; exit 2; }
  bin="$(realpath "$bin")"
  out="$work/callgrind.out"
  rm -f "$out"*
  COUNT_BIN="$bin" COUNT_OUT="$out" "$load" --machines 20 --rate 10 --seconds 35 \
    --pause-after-orders 5 --bin "$work/wrap" > "$work/load.log" 2>&1 &
  load_pid=$!
  # Waits for a line of the load benchmark's output (at most 3 minutes).
  await_line() {
    for _ in $(seq 1 360); do
      grep -q "$1" "$work/load.log" && return 0
      kill -0 "$load_pid" 2>/dev/null || break
      sleep 0.5
    done
    echo "no \"$1\" from the load benchmark:" >&2
    cat "$work/load.log" >&2
    kill "$load_pid" 2>/dev/null || true
    exit 1
  }
  # The server's pid once it runs under valgrind.
  pid=""
  for _ in $(seq 1 60); do
    pid="$(pgrep -f "callgrind-out-file=$out" | head -1 || true)"
    [ -n "$pid" ] && break
    sleep 0.5
  done
  [ -n "$pid" ] || { echo "the server did not start under valgrind" >&2; cat "$work/load.log" >&2; kill "$load_pid" 2>/dev/null; exit 1; }
  await_line "orders: under way"
  sleep 10
  callgrind_control --zero "$pid" > "$work/zero.log" 2>&1 || { cat "$work/zero.log" >&2; exit 1; }
  await_line "orders: done"
  # The last results a moment to be stored.
  sleep 1
  callgrind_control --dump "$pid" > "$work/dump.log" 2>&1 || { cat "$work/dump.log" >&2; exit 1; }
  wait "$load_pid" || { echo "the load run failed:" >&2; cat "$work/load.log" >&2; exit 1; }
  # A build whose sales fail after the signature would look cheaper: every sale must finish.
  grep -q "failed 0$" "$work/load.log" || { echo "$bin: sales failed:" >&2; cat "$work/load.log" >&2; exit 1; }
  dump="$(ls -t "$out".* 2>/dev/null | head -1)"
  [ -n "$dump" ] || { echo "callgrind wrote no dump" >&2; exit 1; }
  python3 - "$dump" "$bin" <<'PY'
import re, sys
# The dump's total, and every call of AppPrivateKey::sign_raw with its inclusive cost (the line
# after `calls=`). Names are given once as `(id) name`, then by `(id)` alone.
SIGN = "AppPrivateKey::sign_raw"
names, total, calls, signing = {}, 0, 0, 0
caller, callee, after_calls = None, None, False
def signs(fn):
    return fn is not None and SIGN in names.get(fn, "")
for line in open(sys.argv[1]):
    if after_calls:
        after_calls = False
        # A call from inside the signature is already in the outer call's cost.
        if signs(callee) and not signs(caller):
            signing += int(line.split()[1])
        continue
    m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3)
        if m.group(1) == "fn":
            caller, callee = m.group(2), None
        else:
            callee = m.group(2)
    elif line.startswith("calls="):
        if signs(callee) and not signs(caller):
            calls += int(line[6:].split()[0])
        after_calls = True
    elif line.startswith(("summary:", "totals:")):
        total = total or int(line.split()[1])
if calls == 0:
    sys.exit(f"{sys.argv[2]}: no sale in the counted window")
print(f"{sys.argv[2]}: {calls} sales, {(total - signing) / calls / 1e6:.3f} M instructions per sale "
      f"apart from the signature (signature {signing / calls / 1e6:.2f} M under valgrind)")
PY
done
