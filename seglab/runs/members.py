"""The members of a run: one per host of a multi-node run, or the run itself."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from seglab import multinode
from seglab.errors import RunError
from seglab.registry import Member, RunRecord
from seglab.runs.records import resolved_recipe
from seglab.runs.runtimes import Runtimes
from seglab.runtime import RunNotFound, Runtime, RuntimeState


def parts(record: RunRecord) -> tuple[Member, ...]:
    """A multi-node run's members; a run on one host is its own single member."""
    return record.members or (Member(record.host, record.gpus, record.handle, record.run_dir),)


def member_ref(record: RunRecord, member: int) -> tuple[str, str]:
    """(host, runtime ref) of member ``member`` (0: the run itself)."""
    found = parts(record)
    if not 0 <= member < len(found):
        if not record.members:
            raise RunError(
                f"run {record.run_id} is not a multi-node run; it has no member {member}"
            )
        raise RunError(f"run {record.run_id} has members 0-{len(found) - 1}, not {member}")
    return found[member].host, found[member].handle or ""


def each_member(
    runtimes: Runtimes,
    record: RunRecord,
    action: Callable[[Runtime, str], None],
    only: Sequence[int] | None = None,
) -> None:
    """Do ``action`` to the members' refs at once (all get a signal together); the first
    error is raised once every member has been dealt with."""
    chosen = [m for i, m in enumerate(parts(record)) if only is None or i in only]
    with ThreadPoolExecutor(max_workers=max(1, len(chosen))) as pool:
        futures = [
            pool.submit(action, runtimes.get(m.host, record.runtime), m.handle or "")
            for m in chosen
        ]
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error


def verdict(runtimes: Runtimes, record: RunRecord) -> multinode.Verdict:
    """The members' states combined; members still running ``node_timeout_s`` after
    another failed are killed here (the trainer's own timeouts end them sooner)."""
    timeout = resolved_recipe(record).resources.node_timeout_s
    hosts = [m.host for m in record.members]

    def states() -> list[RuntimeState]:
        out = []
        for member in record.members:
            try:
                out.append(runtimes.get(member.host, record.runtime).inspect(member.handle or ""))
            except RunNotFound:
                out.append(RuntimeState("dead", error="removed outside seglab"))
        return out

    found = multinode.combine(states(), hosts, timeout)
    if not found.kill:
        return found
    each_member(runtimes, record, lambda runtime, ref: runtime.kill(ref), only=found.kill)
    after = multinode.combine(states(), hosts, timeout)
    message = (
        f"{after.message}; the other members still ran {timeout:.0f} s later "
        "(resources.node_timeout_s) and were killed"
    )
    return replace(after, message=message)
