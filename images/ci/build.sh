#!/usr/bin/env bash
# Build seglab/ci:latest with no container registry.
#
#   images/ci/build.sh [WORKDIR]        (root; docker CLI talking to the target engine)
#
# A Debian bookworm root filesystem is made on this machine with mmdebstrap, from this
# machine's own apt sources (the files under /etc/apt are handed to mmdebstrap as its
# mirror list, so no mirror address lives in this repository), then `docker import`ed.
#
# The image holds only Debian's python3 and the shared libraries torch needs. The trainer's
# Python packages come from the workstation's virtual environment, mounted read-only at
# /usr/local/lib/python3.11/dist-packages (a site dir of Debian's python3, searched after
# the standard library), and the seglab checkout mounted read-only at /opt/seglab, which a
# .pth file in the image puts on sys.path. The docker runtime adds both mounts itself to
# runs of an image labelled seglab.image=ci on a local engine, where the labels below say
# (docs/images.md); no variable is needed.
set -euo pipefail

image=${SEGLAB_CI_IMAGE:-seglab/ci:latest}
work=${1:-$(mktemp -d)}
mkdir -p "$work"
rootfs="$work/rootfs.tar"

sources=()
if [[ -s /etc/apt/sources.list ]] && grep -q '^deb ' /etc/apt/sources.list; then
    sources+=(/etc/apt/sources.list)
fi
for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] && sources+=("$f")
done
if [[ ${#sources[@]} -eq 0 ]]; then
    echo "$0: this machine has no apt sources under /etc/apt to build from" >&2
    exit 1
fi

# The new root is unpacked under TMPDIR: keep it beside the tarball, on the work folder's
# file system, rather than wherever /tmp is.
export TMPDIR="$work"
echo "[1/2] root filesystem (mmdebstrap, bookworm, minbase) from ${sources[*]} in $work" >&2
echo "      free there: $(df -h --output=avail "$work" | tail -n 1 | tr -d ' ') (about 400 MB is used)" >&2
# The hooks are run by mmdebstrap, which passes the new root directory as their $1.
# shellcheck disable=SC2016
mmdebstrap --variant=minbase \
    --include=python3,libgomp1,libstdc++6,procps \
    --customize-hook='mkdir -p "$1/opt/seglab" "$1/usr/local/lib/python3.11/dist-packages"' \
    --customize-hook='echo /opt/seglab >"$1/usr/lib/python3/dist-packages/seglab-checkout.pth"' \
    --customize-hook='rm -rf "$1/var/cache/apt/archives/"*.deb "$1/var/lib/apt/lists/"*' \
    bookworm "$rootfs" "${sources[@]}" >&2 || {
    status=$?
    echo "$0: mmdebstrap failed (exit $status); the file system of $work now has" \
        "$(df -h --output=avail "$work" | tail -n 1 | tr -d ' ') free (a full disk fails" \
        "the unpacking of the largest packages first: libc6, coreutils, perl)" >&2
    exit "$status"
}

echo "[2/2] docker import -> $image" >&2
docker import \
    --change 'LABEL org.opencontainers.image.title="seglab CI image"' \
    --change 'LABEL org.opencontainers.image.description="Debian python3 for seglab tests; trainer packages mounted from the host"' \
    --change 'LABEL seglab.image="ci" seglab.python="3.11"' \
    --change 'LABEL seglab.mount.site-packages="/usr/local/lib/python3.11/dist-packages" seglab.mount.seglab="/opt/seglab"' \
    --change 'ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp' \
    --change 'WORKDIR /tmp' \
    --change 'USER 65534:65534' \
    --change 'CMD ["python3"]' \
    "$rootfs" "$image" >&2
rm -f "$rootfs"
echo "built $image" >&2
