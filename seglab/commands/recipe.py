"""`seglab recipe check|expand`: validate recipes and show their ablation grids."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from seglab.commands import add_command, print_json


def register(subparsers: Any) -> None:
    """Add the `recipe` command group."""
    parser = add_command(
        subparsers,
        "recipe",
        "check and expand experiment recipes",
        "Recipes are YAML files describing an experiment (model, data, training) plus an\n"
        "optional `ablate:` grid. See docs/recipes.md for every key.",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)

    listing = add_command(
        actions,
        "list",
        "list the example recipes shipped with seglab",
        "List the example recipes shipped with seglab. Any command that takes a recipe\n"
        "FILE also accepts one of these names.",
    )
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=_list)

    check = add_command(
        actions,
        "check",
        "validate recipe files",
        "Validate recipe files. Prints every problem as FILE:LINE: key: message and\n"
        "exits 1 if any file has one; exits 0 when all are valid.",
    )
    check.add_argument(
        "files", nargs="+", metavar="FILE", help="recipe YAML files or shipped recipe names"
    )
    check.set_defaults(func=_check)

    expand = add_command(
        actions,
        "expand",
        "list the variants of a recipe's ablation grid",
        "Expand the `ablate:` grid of a recipe into its variants (the cartesian product\n"
        "of the axes) and show each variant's overrides. A recipe without `ablate:` has\n"
        "one variant, `default`.",
    )
    expand.add_argument("file", metavar="FILE", help="recipe YAML file or shipped recipe name")
    expand.add_argument("--json", action="store_true", help="machine-readable output")
    expand.add_argument(
        "--resolved", action="store_true", help="include each variant's full resolved recipe"
    )
    expand.set_defaults(func=_expand)


def _list(args: argparse.Namespace) -> int:
    from seglab.workstation import Workstation

    rows = []
    for path in Workstation().shipped_recipes():
        recipe = Workstation().load_recipe(path)
        rows.append(
            {
                "name": recipe.name,
                "file": str(path),
                "variants": len(recipe.variants),
                "description": recipe.base.description,
            }
        )
    if args.json:
        print_json(rows)
        return 0
    for row in rows:
        print(f"{row['name']:<42} {row['variants']:>2} variant(s)  {row['description'] or ''}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from seglab.workstation import Workstation

    failed = False
    for path, problems in Workstation().check_recipes(args.files):
        if problems:
            failed = True
            for problem in problems:
                print(problem, file=sys.stderr)
        else:
            print(f"{path}: ok")
    return 1 if failed else 0


def _expand(args: argparse.Namespace) -> int:
    from seglab.workstation import Workstation

    recipe = Workstation().load_recipe(args.file)
    rows = []
    for variant in recipe.variants:
        row: dict[str, Any] = {
            "name": variant.name,
            "slug": variant.slug,
            "overrides": variant.overrides,
            "recipe_sha": variant.recipe.sha(),
        }
        if args.resolved:
            row["recipe"] = variant.recipe.model_dump(mode="json")
        rows.append(row)
    if args.json:
        print_json(
            {"recipe": recipe.name, "file": str(recipe.path), "axes": recipe.axes, "variants": rows}
        )
        return 0
    axes = " x ".join(f"{axis}({len(levels)})" for axis, levels in recipe.axes.items())
    print(f"{recipe.name}: {len(rows)} variant(s)" + (f" from {axes}" if axes else ""))
    for row in rows:
        overrides = ", ".join(f"{k}={v}" for k, v in row["overrides"].items()) or "-"
        print(f"  {row['name']:<40} {overrides}")
    return 0
