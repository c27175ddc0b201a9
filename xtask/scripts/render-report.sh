#!/usr/bin/env bash
# Renders a reproduce report in headless Chromium (no network) and writes a screenshot, to check that the
# self-contained HTML displays: `xtask/scripts/render-report.sh target/reproduce/report.html shot.png`.
# Needs Debian's chromium (`apt-get install -y chromium`).
set -euo pipefail
report=$(realpath "${1:-target/reproduce/report.html}")
shot=$(realpath -m "${2:-target/reproduce/report.png}")
height=${3:-4000}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --window-size=1200,"$height" --screenshot="$shot" "file://$report" 2>/dev/null
echo "screenshot: $shot"
