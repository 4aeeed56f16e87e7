#!/usr/bin/env bash
# `pip install .` into a fresh venv must not pull torch, and the installed seglab must find
# its shipped recipes without a checkout.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=${1:?usage: check-install.sh WORKDIR}
rm -rf "$DEST" && mkdir -p "$DEST"
python3 -m venv "$DEST/venv"
"$DEST/venv/bin/pip" install -q "$ROOT"
if "$DEST/venv/bin/pip" show torch >/dev/null 2>&1; then
    echo "FAIL: a plain install pulled torch" >&2
    exit 1
fi
cd "$DEST"  # outside the checkout
"$DEST/venv/bin/seglab" --help >/dev/null
"$DEST/venv/bin/seglab" --version
"$DEST/venv/bin/seglab" recipe expand cityscapes-deeplabv3plus-r50-resolution --json \
    | "$DEST/venv/bin/python" -c '
import json, sys
data = json.load(sys.stdin)
names = [v["name"] for v in data["variants"]]
assert names == ["resolution=full", "resolution=half"], names
assert "/site-packages/seglab/_data/recipes/" in data["file"], data["file"]
print("installed seglab expands", data["recipe"], "->", names)
'
