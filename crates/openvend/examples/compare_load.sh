#!/usr/bin/env bash
# Server CPU per order of two or more `openvend` builds, measured in turn (A B A B …) so each
# meets the same conditions. Prints every run, then each build's fastest and median run.
# Other processes only ever add CPU time, so the fastest run is the best estimate of what a
# build costs; the median shows how noisy the machine was.
#
#   cargo build --release -p openvend --bins --examples
#   cp target/release/openvend /tmp/openvend-before     # … change, rebuild …
#   crates/openvend/examples/compare_load.sh 5 /tmp/openvend-before target/release/openvend
#   crates/openvend/examples/compare_load.sh 3 A B -- --rate 100 --database-url postgres://…
#
# With two or more CPUs the server runs on CPU 0 and the load generator and sandbox on CPU 1.
set -euo pipefail

usage="usage: $0 ROUNDS BIN [BIN...] [-- load flags]"
[ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
rounds="$1"
shift
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive number: $usage" >&2; exit 2; }
bins=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  [ -x "$1" ] || { echo "$1 is not an executable" >&2; exit 2; }
  bins+=("$1")
  shift
done
[ "${1:-}" = "--" ] && shift
flags=(--machines 100 --rate 200 --seconds 20 "$@")

load="$(dirname "$0")/../../../target/release/examples/load"
[ -x "$load" ] || { echo "$load not found: cargo build --release -p openvend --examples" >&2; exit 2; }
pin=()
server_cpus=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  pin=(taskset -c 1)
  server_cpus=(--server-cpus 0)
fi

declare -A runs
for round in $(seq 1 "$rounds"); do
  for bin in "${bins[@]}"; do
    out="$("${pin[@]}" "$load" --bin "$bin" "${server_cpus[@]}" "${flags[@]}")"
    ms="$(sed -n 's/.*= \([0-9.]*\) ms per completed order.*/\1/p' <<<"$out")"
    [ -n "$ms" ] || { echo "no CPU figure from $bin:"; echo "$out"; exit 1; }
    sign="$(sed -n 's/.*signature on this machine now: \([0-9.]*\) ms.*/\1/p' <<<"$out")"
    echo "round $round  $bin  $ms ms per order (one signature ${sign:-?} ms)"
    runs[$bin]="${runs[$bin]:-} $ms"
    signs="${signs:-} ${sign:-}"
  done
done

# Fastest and median of a list of numbers.
fastest_median() {
  local sorted
  # shellcheck disable=SC2086 # the list is numbers separated by spaces
  sorted=($(printf '%s\n' $1 | sort -n))
  echo "fastest ${sorted[0]} ms, median ${sorted[$((${#sorted[@]} / 2))]} ms (${#sorted[@]} runs)"
}
echo
for bin in "${bins[@]}"; do
  echo "$bin: server CPU per order: $(fastest_median "${runs[$bin]}")"
done
[ -z "${signs// /}" ] || echo "one RSA-2048 signature: $(fastest_median "$signs"); the budget is that + 1 ms"
