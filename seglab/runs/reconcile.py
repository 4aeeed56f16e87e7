"""Finding runs again: the runtimes' labelled runs the registry lacks are adopted."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from seglab.errors import RunError, UnavailableError
from seglab.registry import Member, RunRecord
from seglab.runs.context import Part, RunContext
from seglab.runs.recover import Found, Recovery, record_from_labels
from seglab.runs.recover import gpus_of as _gpus
from seglab.runs.runtimes import kinds_on
from seglab.runtime import EngineUnavailable, HostUnreachable

log = logging.getLogger(__name__)


class Reconciler(Part):
    """Adopts the runs of this workstation that the registry does not know."""

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self.recovery = Recovery(ctx)

    def reconcile(self) -> list[str]:
        """Find runs on the runtimes that the registry lacks; returns their ids.

        Runs are this workstation's when their run dir lies under the host's runs root, so
        several users (or test sessions) sharing one engine never adopt each other's runs.
        Lifecycle operations a killed seglab left half done are finished or rolled back
        first (:class:`seglab.runs.recover.Recovery`).
        """
        self.recovery.recover_all()
        found = []
        members: dict[str, dict[int, Found]] = {}
        for host in self.inventory.hosts.values():
            if not host.is_local and not self.io.reaches_remote:
                continue
            for kind in kinds_on(host):
                try:
                    infos = self.runtimes.get(host.name, kind).list({"seglab.run_id": None})
                    root = self.io.runs_root(host)
                except EngineUnavailable:
                    continue  # no engine here: nothing of ours can be on it
                except HostUnreachable as exc:
                    log.warning("cannot reach %s to find its runs: %s", host.name, exc)
                    continue
                except (UnavailableError, RunError) as exc:
                    log.warning("cannot list the runs of %s (%s): %s", host.name, kind, exc)
                    continue
                for info in infos:
                    run_id = info.labels["seglab.run_id"]
                    if not Path(info.labels.get("seglab.run_dir", "/")).is_relative_to(root):
                        continue  # another seglab's run (its own runs root) on this engine
                    if "seglab.member" in info.labels:  # put together below
                        index = int(info.labels["seglab.member"])
                        members.setdefault(run_id, {})[index] = (host.name, kind, info)
                        continue
                    if self.registry.has_run(run_id):
                        continue
                    self.registry.upsert_run(self._record_from_labels(info.labels, info.ref, kind))
                    if info.state.active:
                        self.registry.reserve(host.name, _gpus(info.labels), run_id)
                    found.append(run_id)
        found.extend(self._adopt_members(members))
        for record in self.registry.list_runs(include_finished=False):
            self.refresh(record)
        return found

    def _adopt_members(self, found: Mapping[str, Mapping[int, Found]]) -> list[str]:
        """Multi-node runs the registry lacks, put together from their members' labels."""
        adopted = []
        for run_id, parts in found.items():
            if self.registry.has_run(run_id):
                continue
            nodes = int(parts[min(parts)][2].labels.get("seglab.nodes", "0"))
            if sorted(parts) != list(range(nodes)):
                log.warning(
                    "multi-node run %s: found members %s of %d (a host is "
                    "unreachable?); not adopted yet",
                    run_id,
                    sorted(parts),
                    nodes,
                )
                continue
            ordered = [parts[i] for i in range(nodes)]
            _, kind, first = ordered[0]
            members = tuple(
                Member(h, _gpus(info.labels), info.ref, info.labels.get("seglab.run_dir", ""))
                for h, _, info in ordered
            )
            record = replace(
                self._record_from_labels(first.labels, first.ref, kind), members=members
            )
            self.registry.upsert_run(record)
            for member, (_, _, info) in zip(members, ordered, strict=True):
                if info.state.active:
                    self.registry.reserve(member.host, member.gpus, run_id)
            adopted.append(run_id)
        return adopted

    def _record_from_labels(self, labels: Mapping[str, str], ref: str, kind: str) -> RunRecord:
        return record_from_labels(self.inventory, self.io, labels, ref, kind)
