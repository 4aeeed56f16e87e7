#!/usr/bin/env bash
# Install OpenSSH (server and client tools) for the tests. Idempotent.
#
#   .ci/sshd.sh
#
# The tests start their own `sshd -D -f CONFIG` on 127.0.0.1 at a free port, with host and
# user keys generated per test session (tests/e2e/sshd.py); nothing here starts the system's
# sshd or touches /etc/ssh beyond what the package itself installs. Run as root.
set -euo pipefail
if [[ -x /usr/sbin/sshd ]] && command -v ssh-keygen >/dev/null 2>&1; then
    echo "openssh-server present" >&2
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "$0: installing openssh-server needs root; run it as root (CI does)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d stops the package's post-install from starting the system sshd.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    created_policy=1
fi
remove_policy() {
    if [[ $created_policy -eq 1 ]]; then
        rm -f "$policy"
    fi
}
trap remove_policy EXIT
apt-get update -q >&2
apt-get install -y -q --no-install-recommends openssh-server openssh-client >&2
echo "openssh-server installed" >&2
