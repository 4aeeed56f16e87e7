"""Run ids accept a unique prefix or short id everywhere, as `docker` does for ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from seglab.cli import main
from seglab.registry import AmbiguousRunError, Registry, RunRecord, UnknownRunError

IDS = ("smoke.lr=low.a1b2c3", "smoke.lr=high.d4e5f6", "tiny_grid.default.a1ffff")


def _registry(path: Path) -> Registry:
    registry = Registry(path)
    for run_id in IDS:
        recipe, variant, _ = run_id.split(".")
        registry.upsert_run(
            RunRecord(
                run_id=run_id,
                recipe=recipe,
                variant=variant,
                host="local",
                runtime="process",
                created_at=1000.0,
                status="finished",
            )
        )
    return registry


def test_a_whole_id_a_unique_prefix_or_short_id_names_one_run(tmp_path: Path) -> None:
    registry = _registry(tmp_path / "r.sqlite3")
    assert registry.resolve("smoke.lr=low.a1b2c3") == "smoke.lr=low.a1b2c3"
    assert registry.resolve("smoke.lr=h") == "smoke.lr=high.d4e5f6"
    assert registry.resolve("d4e") == "smoke.lr=high.d4e5f6"  # the short id
    assert registry.resolve("tiny_") == "tiny_grid.default.a1ffff"


def test_an_ambiguous_prefix_lists_the_matches(tmp_path: Path) -> None:
    registry = _registry(tmp_path / "r.sqlite3")
    with pytest.raises(AmbiguousRunError) as info:
        registry.resolve("smoke.lr=")
    assert info.value.matches == ["smoke.lr=high.d4e5f6", "smoke.lr=low.a1b2c3"]
    assert "names 2 runs" in str(info.value) and info.value.hint == "type more of the run id"
    with pytest.raises(AmbiguousRunError):
        registry.resolve("a1")  # two short ids start so


def test_like_wildcards_and_case_are_taken_literally(tmp_path: Path) -> None:
    registry = _registry(tmp_path / "r.sqlite3")
    with pytest.raises(UnknownRunError):
        registry.resolve("tiny%")
    with pytest.raises(UnknownRunError):
        registry.resolve("SMOKE.lr=low")
    with pytest.raises(UnknownRunError):
        registry.resolve("smoke_lr")  # `_` is not a one-character wildcard


def test_the_cli_takes_a_prefix_and_explains_an_ambiguous_one(
    isolated_xdg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _registry(isolated_xdg / "state" / "seglab" / "registry.sqlite3").close()
    assert main(["metrics", "d4e5"]) == 0
    assert main(["metrics", "smoke.lr="]) == 1
    err = capsys.readouterr().err
    assert "'smoke.lr=' names 2 runs: smoke.lr=high.d4e5f6, smoke.lr=low.a1b2c3" in err
    assert "hint: type more of the run id" in err
