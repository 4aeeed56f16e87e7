"""What a workstation does to a host's queue, run on that host.

Each operation takes the booking lock where it changes the queue. A workstation calls
them in-process for a queue on this machine, and for a remote host as
``python3 -m seglab.hostqueue --root RUNS_ROOT --op NAME`` over the host's SSH connection,
with the arguments as a JSON object on stdin and the answer as a JSON object on stdout
(see :data:`OPS`). Reading the queue needs no operation: ``queue.json`` is replaced
atomically and ``journal.jsonl`` only grows, so both are read as files.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from seglab.hostqueue.store import HostQueue, latest

SUBMIT_WAIT_S = 30.0
"""How long a submission waits for the runner's first round after it (the answer then
says which of its runs started, failed or wait)."""


def start_runner(queue: HostQueue) -> None:
    """Start the host's runner, detached (it exits at once if one is running)."""
    queue.dir.mkdir(parents=True, exist_ok=True)
    with open(queue.log_file, "ab") as out:
        subprocess.Popen(
            [sys.executable, "-m", "seglab.hostqueue", "--root", str(queue.root)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def ensure_runner(queue: HostQueue, args: Mapping[str, Any]) -> dict[str, Any]:
    """Start a runner when none serves the queue and it has work: requests waiting, or
    runs it started that have not ended (after the host restarted, say). Not before a
    workstation has written the host's settings: a runner could do nothing without them."""
    going = any(entry["kind"] == "started" for entry in latest(queue.journal()).values())
    started = (
        (bool(queue.items()) or going)
        and queue.host_settings() is not None
        and not queue.has_runner()
    )
    if started:
        start_runner(queue)
    return {"started": started}


def submit(queue: HostQueue, args: Mapping[str, Any]) -> dict[str, Any]:
    """Append ``args["items"]`` to the queue (``args["host"]``: the host's settings), see
    that a runner serves it, and wait for the runner's next round (``args["wait_s"]``).

    The answer: the journal lines of the submitted runs (started or failed in that round)
    and the queue as it is then.
    """
    items = list(args["items"])
    ids = {item["run_id"] for item in items}
    asked = time.time()
    with queue.booking():
        queue.set_host(args["host"])
        queue.write([*queue.items(), *items])
    if not queue.has_runner():
        start_runner(queue)
    deadline = time.monotonic() + float(args.get("wait_s", SUBMIT_WAIT_S))
    while time.monotonic() < deadline and queue.last_round() <= asked:
        time.sleep(0.1)
    return {
        "journal": [entry for entry in queue.journal() if entry["run_id"] in ids],
        "items": queue.items(),
    }


def move(queue: HostQueue, args: Mapping[str, Any]) -> dict[str, Any]:
    """Move run ``args["run_id"]`` ``args["steps"]`` places towards the front (negative:
    the back); its new position (1 starts first), or None when it is not queued."""
    run_id = args["run_id"]
    with queue.booking():
        items = queue.items()
        index = next((i for i, it in enumerate(items) if it["run_id"] == run_id), None)
        if index is None:
            return {"position": None}
        item = items.pop(index)
        position = max(0, min(len(items), index - int(args["steps"])))
        items.insert(position, item)
        queue.write(items)
    return {"position": position + 1}


def discard(queue: HostQueue, args: Mapping[str, Any]) -> dict[str, Any]:
    """Take run ``args["run_id"]`` out of the queue; whether it was there."""
    with queue.booking():
        items = queue.items()
        kept = [item for item in items if item["run_id"] != args["run_id"]]
        if len(kept) != len(items):
            queue.write(kept)
    return {"discarded": len(kept) != len(items)}


OPS: dict[str, Callable[[HostQueue, Mapping[str, Any]], dict[str, Any]]] = {
    "submit": submit,
    "move": move,
    "discard": discard,
    "ensure-runner": ensure_runner,
}
"""The operations by the name ``--op`` takes."""
