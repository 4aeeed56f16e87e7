"""Run lifecycle: submit variants, start them on a runtime, find them again, end them.

:class:`RunManager` is the public class; its parts are runtime choice
(:mod:`~seglab.runs.runtimes`), host files and commands (:mod:`~seglab.runs.hostio`),
launch specs per runtime (:mod:`~seglab.runs.specs`), the launch transaction
(:mod:`~seglab.runs.launch`), submitting and the queue (:mod:`~seglab.runs.submit`),
status and events (:mod:`~seglab.runs.status`), adoption (:mod:`~seglab.runs.reconcile`),
stop/kill/resume/rm/logs (:mod:`~seglab.runs.lifecycle`) and multi-node members
(:mod:`~seglab.runs.members`).
"""

from __future__ import annotations

from seglab.errors import RunError
from seglab.runs.manager import RunManager
from seglab.runs.records import Submitted, resolved_recipe

__all__ = ["RunError", "RunManager", "Submitted", "resolved_recipe"]
