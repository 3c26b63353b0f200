#!/usr/bin/env bash
# Interop: the official Node SDK (alipay-sdk) against the Alipay sandbox.
# Starts a sandbox on a free port with a fresh data folder and a fresh app key, runs
# interop/sandbox-node/interop.mjs, stops the sandbox. Any failure fails the step.
# (The `serve` example prints machine-readable lines; `openvend sandbox` prints the same
# facts for people.)
set -euo pipefail
cd "$(dirname "$0")/../.."

work="$(mktemp -d)"
sandbox_pid=""
cleanup() {
  if [ -n "$sandbox_pid" ] && kill -0 "$sandbox_pid" 2>/dev/null; then
    kill "$sandbox_pid" 2>/dev/null || true
    wait "$sandbox_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "--> npm ci (interop/sandbox-node)"
(cd interop/sandbox-node && npm ci --no-audit --no-fund --loglevel=error)

echo "--> app key pair"
node -e '
  const { generateKeyPairSync } = require("node:crypto");
  const fs = require("node:fs");
  const { privateKey, publicKey } = generateKeyPairSync("rsa", {
    modulusLength: 2048,
    publicKeyEncoding: { type: "spki", format: "pem" },
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
  });
  fs.writeFileSync(process.argv[1] + "/app_private_key.pem", privateKey);
  fs.writeFileSync(process.argv[1] + "/app_public_key.pem", publicKey);
' "$work"

port="$(node -e 'const s=require("node:net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
app_id=2021000000000901

echo "--> build and start the sandbox on 127.0.0.1:$port"
cargo build --release --locked -p alipay-sandbox --example serve
./target/release/examples/serve \
  --listen "127.0.0.1:$port" --data "$work/data" \
  --app-id "$app_id" --app-public-key-file "$work/app_public_key.pem" \
  >"$work/sandbox.out" 2>"$work/sandbox.err" &
sandbox_pid=$!

for _ in $(seq 1 100); do
  grep -qx ready "$work/sandbox.out" 2>/dev/null && break
  if ! kill -0 "$sandbox_pid" 2>/dev/null; then
    echo "the sandbox exited:" >&2; cat "$work/sandbox.err" >&2; exit 1
  fi
  sleep 0.1
done
grep -qx ready "$work/sandbox.out" || { echo "the sandbox did not become ready" >&2; cat "$work/sandbox.err" >&2; exit 1; }
cat "$work/sandbox.out"
gateway_url="$(sed -n 's/^gateway_url=//p' "$work/sandbox.out")"
key_file="$(sed -n 's/^alipay_public_key_file=//p' "$work/sandbox.out")"

echo "--> interop script"
SANDBOX_GATEWAY_URL="$gateway_url" \
SANDBOX_APP_ID="$app_id" \
SANDBOX_APP_PRIVATE_KEY_FILE="$work/app_private_key.pem" \
SANDBOX_ALIPAY_PUBLIC_KEY_FILE="$key_file" \
  node interop/sandbox-node/interop.mjs
