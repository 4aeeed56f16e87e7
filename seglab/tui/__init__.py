"""The Textual dashboard: a view over :class:`seglab.workstation.Workstation`."""

from __future__ import annotations
