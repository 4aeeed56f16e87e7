"""A remote run's prediction samples come over its host's SSH connection: `seglab show`,
`seglab report` and the façade's sample reads against a real sshd."""

from __future__ import annotations

from pathlib import Path

import pytest

from seglab import paths
from seglab.cli import main
from seglab.workstation import Workstation
from tests.e2e.sshd import Lab
from tests.tui.samples_seed import IDS, ITERATIONS, seed_sample_runs

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(120)]


def test_remote_samples_show_and_report(lab1: Lab, tmp_path: Path) -> None:
    state = paths.state_dir()
    state.mkdir(parents=True, exist_ok=True)
    runs_root = tmp_path / "lab1-runs"
    ids = seed_sample_runs(state, runs_root, host="lab1")
    ws = Workstation()
    try:
        assert ws.sample_iterations(ids[0]) == list(ITERATIONS)
        samples = ws.samples(ids[0], ITERATIONS[0])
        assert [s.id for s in samples] == IDS
        local = runs_root / ids[0] / "samples" / f"iter_{ITERATIONS[0]}" / f"{IDS[0]}_overlay.png"
        assert samples[0].views["overlay"] == local.read_bytes()
        summary = ws.run_summary(ids[1])
        assert summary.host == "lab1" and summary.samples_iter == ITERATIONS[-1]
        assert len(summary.samples) == len(IDS) and "gt" in summary.samples[0].views
    finally:
        ws.close()
    out = tmp_path / "remote.html"
    assert main(["report", *ids, "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8").count('data-view="overlay"') == 2 * len(IDS)
