#!/usr/bin/env bash
# Browser suite: headless Chromium (Debian's `chromium`, no browser download) drives the
# buyer's H5 pages against a real `openvend serve` with its embedded sandbox, in user_id and
# open_id mode (interop/browser/h5.mjs). Screenshots of every page go to
# target/browser-screenshots/ (test artefacts, not committed).
set -euo pipefail
cd "$(dirname "$0")/../.."

need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
# Chinese glyphs, so the screenshots are readable.
fc-list 2>/dev/null | grep -qi "wqy\|noto sans cjk" || need_apt+=(fonts-wqy-zenhei)
if ((${#need_apt[@]})); then
  echo "--> apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

echo "--> npm ci (interop/browser)"
(cd interop/browser && npm ci --no-audit --no-fund --loglevel=error)

echo "--> build openvend"
cargo build --locked -p openvend --bin openvend

shots="target/browser-screenshots"
rm -rf "$shots"
echo "--> browser flows (screenshots in $shots)"
CHROMIUM="$(command -v chromium)" node interop/browser/h5.mjs target/debug/openvend "$shots"
