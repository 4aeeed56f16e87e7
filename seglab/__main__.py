"""`python -m seglab` runs the command-line interface."""

from __future__ import annotations

from seglab.cli import main

raise SystemExit(main())
