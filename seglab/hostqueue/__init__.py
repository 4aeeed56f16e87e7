"""The host queue: variants waiting for a host's GPUs, started by a runner on that host.

The queue, its lock and the runner's journal live under the host's runs root
(:mod:`~seglab.hostqueue.store`); the runner (:mod:`~seglab.hostqueue.runner`, run as
``python3 -m seglab.hostqueue --root RUNS_ROOT``) starts queued variants as GPUs free up
and exits when its queue is empty and its runs have ended.
"""

from __future__ import annotations
