#!/usr/bin/env bash
# Refresh the console's vendored browser libraries from npm: unmodified dist files, pinned versions.
# Usage: scripts/refresh-vendor.sh   (needs npm; writes app/console/static/vendor/)
set -euo pipefail
cd "$(dirname "$0")/.."

TUS_VERSION=4.3.1
VENDOR=app/console/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "tus-js-client@${TUS_VERSION}" >/dev/null && tar xzf "tus-js-client-${TUS_VERSION}.tgz")
cp "$work/package/dist/tus.min.js" "$work/package/dist/tus.min.js.map" "$VENDOR/"
cp "$work/package/LICENSE" "$VENDOR/tus-js-client.LICENSE"
(cd "$VENDOR" && sha256sum tus.min.js tus.min.js.map)
echo "tus-js-client ${TUS_VERSION} -> ${VENDOR} (update the version and checksums in ${VENDOR}/README.md if they changed)"
