#!/usr/bin/env bash
# Start the services the tests use, each under WORK/<name>/ with a pid file that .ci/run's
# cleanup stops, and write WORK/env for .ci/run to source. Each script is idempotent.
#   docker.sh: a private dockerd (no TCP, no bridge) and the CI image seglab/ci:latest
#   sshd.sh:   OpenSSH; the tests start their own sshd on 127.0.0.1 with per-run keys
#   slurm.sh:  a single-node Slurm (munged, slurmctld, slurmd; two fake GPUs as GRES)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=${1:?usage: services.sh WORKDIR}
bash "$HERE/docker.sh" "$WORK/docker"
bash "$HERE/sshd.sh"
cp "$WORK/docker/env" "$WORK/env"
bash "$HERE/slurm.sh" "$WORK/slurm"
cat "$WORK/slurm/env" >>"$WORK/env"
