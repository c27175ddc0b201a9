#!/usr/bin/env bash
# Looks at a reproduce report as a reader would: headless Chromium at 1,400 px, one screenshot of the first
# screen and one of the whole page, and the page's size. Usage: tests/report/check.sh REPORT.html [OUT_DIR]
# Needs Debian's `chromium` (apt-get install -y chromium). Not run by CI (it needs a browser).
set -euo pipefail
report=$(realpath "$1")
out=${2:-$(dirname "$report")/report-check}
mkdir -p "$out"
shot() { # width height file
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --hide-scrollbars \
    --window-size="$1,$2" --screenshot="$3" "file://$report" >/dev/null 2>&1
}
shot 1400 1000 "$out/first-screen.png"
shot 1400 20000 "$out/page.png"
bytes=$(stat -c %s "$report")
echo "report: $report"
echo "size: $bytes bytes ($(( bytes / 1024 )) KiB); limit 3 MiB"
echo "screenshots: $out/first-screen.png (1400x1000), $out/page.png (1400x20000)"
[ "$bytes" -lt $((3 * 1024 * 1024)) ] || { echo "error: report over 3 MiB"; exit 1; }
