#!/usr/bin/env bash
# Debian packages the tests need. Idempotent; skips apt when everything is present.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PACKAGES=(python3-venv curl ca-certificates procps tmux chromium prometheus)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
