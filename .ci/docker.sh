#!/usr/bin/env bash
# Start a private Docker engine for CI and development, and build the CI image.
#
#   .ci/docker.sh WORKDIR
#
# Run as root. Installs Debian's docker.io and mmdebstrap when missing, starts
# `dockerd --bridge=none --iptables=false` (containers get no network; nothing leaves the
# machine) on a unix socket, data root and exec root of its own under WORKDIR, waits until
# the engine answers, then builds seglab/ci:latest (images/ci/build.sh) unless it exists.
# Idempotent: a second call with the same WORKDIR reuses the running engine. Never listens
# on TCP. Calling it with another WORKDIR starts a second, independent engine (CI uses one
# as a "remote" server's engine).
#
# Afterwards:  export DOCKER_HOST=unix://WORKDIR/docker.sock   (also written to WORKDIR/env)
# Stop with:   kill "$(cat WORKDIR/dockerd.pid)"
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 WORKDIR" >&2
    exit 2
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "$0: dockerd needs root; run it as root (CI does)" >&2
    exit 1
fi

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
mkdir -p "$1"
work=$(cd "$1" && pwd)
sock="$work/docker.sock"
pidfile="$work/dockerd.pid"
log="$work/dockerd.log"
export DOCKER_HOST="unix://$sock"

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if [[ ${#need[@]} -gt 0 ]]; then
    echo "installing ${need[*]}" >&2
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${need[@]}" tini >&2
fi

engine_answers() {
    docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null && engine_answers; then
    echo "dockerd already running (pid $(cat "$pidfile")) on $sock" >&2
else
    if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "dockerd (pid $(cat "$pidfile")) does not answer on $sock; see $log" >&2
        exit 1
    fi
    rm -f "$pidfile" "$sock"
    mkdir -p "$work/data-root" "$work/exec-root"
    # setsid: the engine outlives this script (the caller stops it with the pid file).
    setsid dockerd \
        --host "unix://$sock" \
        --data-root "$work/data-root" \
        --exec-root "$work/exec-root" \
        --pidfile "$pidfile" \
        --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
        >"$log" 2>&1 </dev/null &
    for _ in $(seq 1 120); do
        if engine_answers; then
            break
        fi
        if ! kill -0 $! 2>/dev/null; then
            echo "dockerd exited during start-up; last lines of $log:" >&2
            tail -n 20 "$log" >&2
            exit 1
        fi
        sleep 0.5
    done
    if ! engine_answers; then
        echo "dockerd did not answer on $sock within 60 s; see $log" >&2
        exit 1
    fi
    echo "dockerd $(docker version --format '{{.Server.Version}}') running (pid $(cat "$pidfile")) on $sock" >&2
fi

echo "export DOCKER_HOST=unix://$sock" >"$work/env"

if docker image inspect seglab/ci:latest >/dev/null 2>&1; then
    echo "image seglab/ci:latest present" >&2
else
    "$repo/images/ci/build.sh" "$work/image-build"
fi
echo "export DOCKER_HOST=unix://$sock"
