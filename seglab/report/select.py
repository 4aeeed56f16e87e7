"""Which runs a report covers: RUN ids, or a RECIPE's latest run of each variant."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from seglab.errors import SeglabError
from seglab.recipes import RecipeFile
from seglab.registry import RunRecord


@dataclass
class Selection:
    """The runs of a report, in grid order, and the recipe their diffs are taken against."""

    run_ids: list[str] = field(default_factory=list)
    title: str = ""
    base: dict[str, Any] | None = None
    base_name: str = "the first run"


def select(
    records: Sequence[RunRecord],
    targets: Sequence[str],
    load_recipe: Callable[[str], RecipeFile],
) -> Selection:
    """Resolve `targets`: a run id names that run; anything else is a recipe (file or
    shipped name) whose most recent run of each variant is taken, in the grid's order."""
    by_id = {r.run_id: r for r in records}
    chosen = Selection()
    names = []
    for target in targets:
        if target in by_id:
            chosen.run_ids.append(target)
            names.append(target)
            continue
        recipe = load_recipe(target)
        runs = sorted((r for r in records if r.recipe == recipe.name), key=lambda r: r.created_at)
        latest = {r.variant: r.run_id for r in runs}
        if not latest:
            raise SeglabError(
                f"recipe {recipe.name} has no runs in the registry",
                "`seglab ps --all` lists every run; `seglab run RECIPE` starts some",
            )
        order = [v.name for v in recipe.variants]
        ordered = sorted(latest, key=lambda v: order.index(v) if v in order else len(order))
        chosen.run_ids.extend(latest[v] for v in ordered)
        chosen.base = recipe.base.model_dump(mode="json")
        chosen.base_name = f"{recipe.name} (base)"
        names.append(recipe.name)
    chosen.title = "seglab report: " + ", ".join(names)
    return chosen
