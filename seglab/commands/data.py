"""`seglab data`: check, prepare and copy the datasets of every host."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from seglab.commands import CommandError, add_command, print_json
from seglab.errors import SeglabError

if TYPE_CHECKING:
    from seglab.data.checks import Check
    from seglab.workstation import Workstation

DESCRIPTION = """\
Datasets where the GPUs are. Each host in hosts.yaml maps dataset names to paths
under `datasets:`; these commands check those paths, unpack the official archives into
the layout the trainer reads, and copy a dataset from one host to another over seglab's
SSH connection to each host.

  seglab data ls [--host H] [--json] [--deep]
  seglab data prepare cityscapes|ade20k|voc --from DIR --to PATH [--host H]
  seglab data sync NAME --to HOST [--from HOST] [--path PATH] [--delete]

`seglab data COMMAND --help` explains each; docs/data.md has the details.
"""

LS_HELP = """\
For every host (or --host H) and every dataset in its `datasets:`: the path, whether it
exists, images and labels per split against the official counts (Cityscapes fine
2975/500/1525, ADE20K 20210/2000, VOC 2012 1464/1449, SBD-augmented trainaug 10582 when
present), the size, images without a label, and a check of a sample of 64 files' headers.
Remote hosts answer with one small python3 command over their SSH connection; no data is
copied. --deep reads every file (all headers, and a SHA-256 of the tree). Results are
kept in the state dir (data-checks.json): runs use them when fresh.

--json prints a list of checks: host, name, root, present, kind, splits (images, labels,
missing_labels, examples), files, size, checked, bad_files, tree_sha256 (--deep), ok,
problems, checked_at (UNIX time).
"""

PREPARE_HELP = """\
Unpack the official archives, as the dataset sites name them, from DIR into PATH in the
layout the trainer reads:

  cityscapes  leftImg8bit_trainvaltest.zip + gtFine_trainvaltest.zip
  ade20k      ADEChallengeData2016.zip
  voc         VOCtrainval_11-May-2012.tar

The archives are checked first (readable, a truncated download has no zip directory or
ends early; the expected folders inside), then the free space at PATH against their
unpacked size; every member is written into a temporary folder beside PATH (zip CRC-32s
checked on the way), the splits are counted, and the folder is renamed to PATH. With
--host H the archives and PATH are on that host and the work runs there. Prints the
hosts.yaml `datasets:` entry to add.
"""

SYNC_HELP = """\
Copy dataset NAME from --from HOST (default: local) to --to HOST over seglab's SSH
connections (SFTP): both sides list path, size and mtime; files whose size differs (or
whose contents differ, by SHA-256, when only the mtime does) are sent, each to a partial
file that an interrupted sync resumes, then renamed into place; afterwards the target is
listed again (sizes and mtimes; --checksum also hashes the files sent on both sides).
Nothing on the target is
deleted unless --delete. Between two remote hosts the data streams through this machine.

The target path is the --to host's `datasets:` entry for NAME, or --path PATH (then the
entry to add is printed).
"""


def register(subparsers: Any) -> None:
    """Add the `data` command group."""
    parser = add_command(subparsers, "data", "check, prepare and sync datasets", DESCRIPTION)
    sub = parser.add_subparsers(title="data commands", metavar="ACTION", required=True)

    ls = add_command(sub, "ls", "check the datasets of every host", LS_HELP)
    ls.add_argument("--host", metavar="H", help="only this host")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.add_argument("--deep", action="store_true", help="read and hash every file")
    ls.set_defaults(func=_ls)

    prep = add_command(sub, "prepare", "unpack official archives", PREPARE_HELP)
    prep.add_argument("kind", choices=("cityscapes", "ade20k", "voc"))
    prep.add_argument("--from", dest="source", required=True, metavar="DIR")
    prep.add_argument("--to", dest="target", required=True, metavar="PATH")
    prep.add_argument("--host", default="local", metavar="H", help="where DIR and PATH are")
    prep.add_argument("--name", help="the dataset name for hosts.yaml (default: KIND)")
    prep.set_defaults(func=_prepare)

    sync = add_command(sub, "sync", "copy a dataset to another host", SYNC_HELP)
    sync.add_argument("name", metavar="NAME")
    sync.add_argument("--to", dest="target", required=True, metavar="HOST")
    sync.add_argument("--from", dest="source", default="local", metavar="HOST")
    sync.add_argument("--path", metavar="PATH", help="target root (default: its hosts.yaml)")
    sync.add_argument("--delete", action="store_true", help="delete target files not in source")
    sync.add_argument(
        "--checksum", action="store_true", help="also hash the files sent, on both sides"
    )
    sync.add_argument("--json", action="store_true", help="print the report as JSON")
    sync.set_defaults(func=_sync)


def _workstation() -> Workstation:
    from seglab.workstation import Workstation

    return Workstation()


def _ls(args: argparse.Namespace) -> int:
    from seglab.data.checks import KINDS, CheckCache, scan

    ws = _workstation()
    hosts = [ws.inventory().get(args.host)] if args.host else list(ws.inventory())
    checks: list[Check] = []
    failures: list[tuple[str, str]] = []
    for host in hosts:
        machine = ws.machine(host.name).machine
        for name, root in sorted(host.datasets.items()):
            kind = name if name in KINDS else "auto"
            try:
                checks.append(ws.loop().call(scan(machine, name, root, kind, args.deep)))
            except SeglabError as exc:  # one unreachable host does not hide the others
                failures.append((f"{host.name}/{name}", exc.describe()))
    CheckCache(ws.state_dir).put(checks)
    if args.json:
        print_json(
            [c.to_dict() for c in checks]
            + [{"host": w.split("/")[0], "name": w.split("/")[1], "error": e} for w, e in failures]
        )
    else:
        _print_checks(checks, failures)
    return 1 if failures or not all(c.ok for c in checks) else 0


def _splits(check: Check) -> str:
    from seglab.data.checks import OFFICIAL

    official = OFFICIAL.get(check.kind or "", {})
    parts = []
    for split, info in check.splits.items():
        want = official.get(split)
        parts.append(f"{split} {info['images']}" + (f"/{want}" if want else ""))
    return " ".join(parts) or "-"


def _print_checks(checks: Sequence[Check], failures: Sequence[tuple[str, str]]) -> None:
    if not checks and not failures:
        print("no datasets in hosts.yaml (add `datasets: {NAME: PATH}` to a host)")
    now = time.time()
    for check in checks:
        size = check.scan.get("size")
        print(
            f"{check.host:<10} {check.name:<12} {'✓' if check.ok else '✗'} "
            f"{check.scan.get('root')}  {_splits(check)}  "
            f"{'-' if size is None else f'{size / 1e9:.2f} GB'}  "
            f"checked {now - check.checked_at:.0f} s ago"
        )
        for problem in check.problems():
            print(f"    ! {problem}")
    for where, error in failures:
        print(f"{where:<23} ✗ {error}")


def _entry(host: str, name: str, root: str) -> str:
    return f"hosts:\n  {host}:\n    datasets:\n      {name}: {root}"


def _prepare(args: argparse.Namespace) -> int:
    from seglab.data.checks import Check, CheckCache, ask

    ws = _workstation()
    machine = ws.machine(args.host).machine
    request = {"op": "prepare", "kind": args.kind, "source": args.source, "target": args.target}
    scan = ws.loop().call(ask(machine, request, timeout=6 * 3600.0))
    name = args.name or args.kind
    check = Check(args.host, name, scan, time.time())
    CheckCache(ws.state_dir).put([check])
    _print_checks([check], [])
    print(f"\nprepared {args.kind} at {args.host}:{args.target}; in hosts.yaml:")
    print(_entry(args.host, name, args.target))
    return 0


def _sync(args: argparse.Namespace) -> int:
    from seglab.data.sync import sync
    from seglab.data.trees import tree

    ws = _workstation()
    source_host, target_host = ws.inventory().get(args.source), ws.inventory().get(args.target)
    source_root = source_host.dataset_root(args.name)
    target_root = args.path or target_host.datasets.get(args.name)
    if target_root is None:
        raise CommandError(
            f"host {args.target} has no `datasets:` entry for {args.name!r}",
            hint="give the target folder with --path PATH",
        )
    source = tree(ws.machine(args.source).machine, source_root)
    target = tree(ws.machine(args.target).machine, target_root)
    meter = _Meter() if sys.stderr.isatty() else None
    report = ws.loop().call(
        sync(source, target, delete=args.delete, checksum=args.checksum, progress=meter)
    )
    if meter is not None:
        meter.end()
    if args.json:
        print_json(report.to_dict())
    else:
        print(
            f"{report.source} -> {report.target}: {report.files} files, {report.same} "
            f"unchanged, {report.sent} sent ({report.resumed} resumed, "
            f"{report.bytes_sent / 1e6:.1f} MB), {report.retouched} retouched, "
            f"{report.deleted} deleted in {report.seconds:.1f} s; verified"
        )
    if target_host.datasets.get(args.name) != target_root:
        print(f"add to hosts.yaml:\n{_entry(args.target, args.name, target_root)}")
    return 0


class _Meter:
    """A one-line progress bar on stderr: bytes, bytes/s and ETA."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int, files: int, count: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.2 and done < total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-6)
        eta = (total - done) / rate if rate > 0 else 0.0
        width = 30
        filled = int(width * done / total) if total else width
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done / 1e6:,.0f}/{total / 1e6:,.0f} MB"
            f"  {rate / 1e6:.1f} MB/s  ETA {int(eta) // 60}:{int(eta) % 60:02d}"
            f"  files {files}/{count} "
        )
        sys.stderr.flush()

    def end(self) -> None:
        """Finish the line."""
        sys.stderr.write("\n")
