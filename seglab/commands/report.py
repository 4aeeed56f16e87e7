"""`seglab report RECIPE|RUN...`: an ablation's results in one file to share."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from seglab.commands import CommandError, add_command

FORMATS = ("html", "md", "csv", "json")


def register(subparsers: Any) -> None:
    """Add the `report` command."""
    parser = add_command(
        subparsers,
        "report",
        "write an ablation report (HTML + Markdown, or CSV/JSON numbers)",
        "Write a report of a recipe's runs (its latest run of each variant) or of the runs\n"
        "named: the grid table (best mIoU, mIoU at each evaluation, pixel accuracy, img/s,\n"
        "GPU-hours, host, image digest, recipe sha), per-class IoU as a heat table, mIoU\n"
        "curves, the prediction samples of each variant side by side, and each variant's\n"
        "recipe differences from the base. HTML is one self-contained file (images inlined,\n"
        "no network, no script) written with a Markdown twin beside it (FILE.md);\n"
        "--format md writes the Markdown alone; csv and json give the numbers alone (on\n"
        "stdout unless -o). docs/report.md describes every part.\n\n"
        "examples:\n"
        "  seglab report synthetic-smoke-ablation -o ablation.html\n"
        "  seglab report RUN1 RUN2 --format csv",
    )
    parser.add_argument("targets", nargs="+", metavar="RECIPE|RUN", help="recipes or run ids")
    parser.add_argument("-o", "--output", type=Path, metavar="FILE", help="where to write it")
    parser.add_argument(
        "--format", choices=FORMATS, default=None, help="default: from -o, else html"
    )
    parser.set_defaults(func=_report)


def _format(args: argparse.Namespace) -> str:
    if args.format is not None:
        return str(args.format)
    if args.output is not None:
        suffix: str = args.output.suffix.lstrip(".").lower()
        if suffix in FORMATS:
            return suffix
        if suffix in ("htm", "markdown"):
            return {"htm": "html", "markdown": "md"}[suffix]
        raise CommandError(
            f"cannot tell the format of {args.output} from its suffix", "pass --format"
        )
    return "html"


def _report(args: argparse.Namespace) -> int:
    from seglab.report import html, markdown, tables
    from seglab.workstation import Workstation

    fmt = _format(args)
    ws = Workstation()
    chosen = ws.report_selection(args.targets)
    runs = [ws.run_summary(run_id, images=fmt in ("html", "md")) for run_id in chosen.run_ids]
    if fmt in ("csv", "json"):
        text = tables.to_csv(runs) if fmt == "csv" else tables.to_json(runs, chosen.base)
        if args.output is None:
            print(text, end="" if text.endswith("\n") else "\n")
        else:
            args.output.write_text(text, encoding="utf-8")
            print(f"wrote {args.output}")
        return 0
    output = args.output or Path(f"{args.targets[0].replace('/', '_')}-report.{fmt}")
    md = markdown.render_markdown(chosen.title, runs, chosen.base, chosen.base_name)
    if fmt == "md":
        output.write_text(md, encoding="utf-8")
        print(f"wrote {output}")
        return 0
    output.write_text(
        html.render_html(chosen.title, runs, chosen.base, chosen.base_name), encoding="utf-8"
    )
    twin = output.with_suffix(".md")
    twin.write_text(md, encoding="utf-8")
    print(f"wrote {output} and {twin}")
    return 0
