#!/usr/bin/env bash
# Start the services the tests use, each under WORK/<name>/ with a pid file that .ci/run's
# cleanup stops. Each service script is idempotent.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=${1:?usage: services.sh WORKDIR}
if [ -f "$HERE/docker.sh" ]; then
    bash "$HERE/docker.sh" "$WORK/docker"
fi
