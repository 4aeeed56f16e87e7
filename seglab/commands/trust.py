"""`seglab hosts trust NAME`: show a server's host key fingerprint and add it to known_hosts."""

from __future__ import annotations

import argparse
import sys

from seglab.commands import add_command

DESCRIPTION = """\
Trust the SSH host key of remote host NAME (from hosts.yaml). seglab checks host
keys strictly against ~/.ssh/known_hosts and refuses an unknown or changed key;
this command is how a new server becomes known.

It connects only far enough to receive the server's host key (nothing is
authenticated, no command runs), prints the key's SHA256 fingerprint, asks you to
confirm, and appends the key to ~/.ssh/known_hosts in OpenSSH format (so ssh
trusts it too). Compare the fingerprint with the server's own, e.g. on the server:
  ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub

If known_hosts already holds a DIFFERENT key for the host, nothing is changed:
find out why the key changed first, then remove the old line with
ssh-keygen -R '[host]:port' (or 'host' on port 22) and run this again.

Exit status: 0 when the key is trusted (now or already), 1 otherwise.

Examples:
  seglab hosts trust lab1
  seglab hosts trust lab1 --yes     # no question (scripts that checked it already)
"""


def add_trust_action(hosts_parser: argparse.ArgumentParser) -> None:
    """Add `trust` as an action of the `seglab hosts` command."""
    actions = hosts_parser.add_subparsers(
        title="actions", metavar="ACTION", dest="hosts_action", required=False
    )
    trust = add_command(actions, "trust", "trust a remote host's SSH host key", DESCRIPTION)
    trust.add_argument("name", metavar="NAME", help="host name from hosts.yaml")
    trust.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="add the key without asking (only after checking its fingerprint)",
    )
    trust.set_defaults(func=_trust)


def _trust(args: argparse.Namespace) -> int:
    import asyncio

    import asyncssh

    from seglab.commands import CommandError
    from seglab.hosts import load_inventory
    from seglab.remote.connection import known_hosts_path, network_reason
    from seglab.remote.trust import add_to_known_hosts, fetch_server_key

    host = load_inventory().get(args.name)
    if host.ssh is None:
        raise CommandError(f"host {host.name!r} is this machine; it has no SSH host key")
    target = host.ssh
    try:
        key = asyncio.run(fetch_server_key(target))
    except (OSError, asyncio.TimeoutError, asyncssh.Error) as exc:
        raise CommandError(
            f"cannot reach {target} ({host.name}) to read its host key: "
            f"{network_reason(exc, target)}"
        ) from None
    print(f"{host.name} ({target}) presents this {key.key_type} host key:")
    print(f"  {key.fingerprint}")
    if key.trusted:
        print(f"It is already trusted in {known_hosts_path()}.")
        return 0
    if key.conflicts:
        raise CommandError(
            f"{known_hosts_path()} holds a DIFFERENT key for {key.line.split()[0]}; nothing "
            f"was changed. Find out why the server's key changed, remove the old line with "
            f"ssh-keygen -R '{key.line.split()[0]}', then run `seglab hosts trust {host.name}` "
            f"again"
        )
    if not args.yes and not _confirm(f"Trust it and add it to {known_hosts_path()}? [y/N] "):
        print("Not trusted; nothing was written.", file=sys.stderr)
        return 1
    path = add_to_known_hosts(key)
    print(f"Added to {path}; seglab and ssh now accept this key for {host.name}.")
    return 0


def _confirm(question: str) -> bool:
    try:
        answer = input(question)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")
