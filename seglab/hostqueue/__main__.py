"""``python3 -m seglab.hostqueue --root RUNS_ROOT``: the host's queue runner."""

from __future__ import annotations

from seglab.hostqueue.runner import main

raise SystemExit(main())
