"""A stand-in `nvidia-smi` that replays a real capture from tests/fixtures/nvidia-smi.

Standard library only, so any Python 3 runs it. Environment:

- ``SEGLAB_STANDIN_CAPTURE``: capture file name (in the fixtures folder) or path;
  default the H100 capture.
- ``SEGLAB_STANDIN_GPUS``: how many GPUs the host has (default 1); each gets its own index,
  a distinct derived UUID and PCI bus id, and a copy of the capture's processes.
- ``SEGLAB_STANDIN_PHASE``: ``idle`` (default) or ``load``: which section to replay.
- ``SEGLAB_STANDIN_DOWN_FILE``: while this file exists the stand-in answers like a host
  whose driver is not loaded (the real message, exit status 9).
- ``SEGLAB_STANDIN_PIDS_FILE``: a file of whitespace-separated pids, read at each call;
  the compute apps' rows report them in order instead of the capture's pids (so a test
  can make a real process, such as a run, hold a "GPU").

Honoured: ``--query-gpu=F,..`` and ``--query-compute-apps=F,..`` (unknown fields are
answered as the real tool does: ``Field "X" is not a valid field to query.`` on stdout,
exit status 2), ``--format=csv[,noheader][,nounits]``, ``-lms N`` / ``-l N`` (and the
long forms), ``--help-query-gpu``, ``--help-query-compute-apps``, ``--version``, ``-L``,
``-q`` and the default table.
"""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import sys
import time
import zlib
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nvidia-smi"
DEFAULT_CAPTURE = "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt"
RULE = "#" * 80
DRIVER_DOWN = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running.\n"
)
_QUOTED = re.compile(r'"([^"]+)"')
_UNIT = re.compile(r"^(.*?) \[(.+)\]$")


class Capture:
    """The sections of one capture file, keyed ``"<phase> :: <what>"``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sections: dict[str, str] = {}
        self._tables: dict[str, tuple[list[str], list[str], list[list[str]]]] = {}
        self._valid: dict[str, dict[str, str]] = {}
        lines = path.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            if lines[i] == RULE and i + 1 < len(lines) and " :: " in lines[i + 1]:
                key = lines[i + 1][2:].strip()
                j = i + 2
                while j < len(lines) and lines[j] != RULE:
                    j += 1
                k = j + 1
                while k < len(lines) and not (
                    lines[k] == RULE and k + 1 < len(lines) and " :: " in lines[k + 1]
                ):
                    k += 1
                self.sections[key] = "\n".join(lines[j + 1 : k]).strip("\n")
                i = k
            else:
                i += 1

    def section(self, phase: str, what: str) -> str:
        """The body of the first section whose key starts with ``phase :: what``."""
        prefix = f"{phase} :: {what}"
        for key, body in self.sections.items():
            if key.startswith(prefix):
                return body
        raise KeyError(f"{self.path.name} has no section {prefix!r}")

    def table(self, phase: str, what: str) -> tuple[list[str], list[str], list[list[str]]]:
        """A CSV section as (field names, units, rows); units are '' where there is none."""
        key = f"{phase} :: {what}"
        if key not in self._tables:
            self._tables[key] = self._read_table(phase, what)
        return self._tables[key]

    def _read_table(self, phase: str, what: str) -> tuple[list[str], list[str], list[list[str]]]:
        rows = list(csv.reader(io.StringIO(self.section(phase, what)), skipinitialspace=True))
        names, units = [], []
        for cell in rows[0]:
            match = _UNIT.match(cell)
            names.append(match.group(1) if match else cell)
            units.append(match.group(2) if match else "")
        return names, units, [row for row in rows[1:] if row]

    def valid_fields(self, switch: str) -> dict[str, str]:
        """Every name ``--help-query-<switch>`` accepts, mapped to its first spelling."""
        if switch in self._valid:
            return self._valid[switch]
        names: dict[str, str] = self._valid.setdefault(switch, {})
        for line in self.section("capabilities", f"help-query-{switch}").splitlines():
            if line.startswith('"'):
                spellings = _QUOTED.findall(line)
                for name in spellings:
                    names[name] = spellings[0]
        return names


def resolve_capture(name: str | None) -> Path:
    """The capture file named by a file name in the fixtures folder or by a path."""
    if not name:
        return FIXTURES / DEFAULT_CAPTURE
    path = Path(name)
    return path if path.is_file() else FIXTURES / name


def gpu_uuid(capture: Path, index: int) -> str:
    """A distinct, stable UUID for GPU ``index`` replayed from ``capture``."""
    tag = zlib.crc32(capture.name.encode()) & 0xFFFFFFFF
    return f"GPU-{index:08x}-5e61-4ab0-8000-{tag:012x}"


def mig_uuid(capture: Path, index: int, device: int) -> str:
    """A distinct, stable UUID for MIG device ``device`` of GPU ``index``."""
    tag = zlib.crc32(capture.name.encode()) & 0xFFFFFFFF
    return f"MIG-{index:04x}{device:04x}-5e61-4ab0-8000-{tag:012x}"


def bus_id(index: int) -> str:
    """A distinct PCI bus id for GPU ``index``."""
    return f"00000000:{0x10 + index:02X}:00.0"


class StandIn:
    """Answers one command line."""

    def __init__(self, capture: Capture, gpus: int, phase: str, pids: tuple[str, ...] = ()) -> None:
        self.capture = capture
        self.gpus = gpus
        self.phase = phase
        self.pids = pids

    def gpu_rows(self, fields: list[str], nounits: bool) -> list[list[str]]:
        """One row per GPU for ``--query-gpu``."""
        names, units, rows = self.capture.table(self.phase, "query-gpu")
        valid = self.capture.valid_fields("gpu")
        column = {name: i for i, name in enumerate(names)}
        stamp = _timestamp()
        out = []
        for index in range(self.gpus):
            derived = {
                "timestamp": stamp,
                "index": str(index),
                "count": str(self.gpus),
                "uuid": gpu_uuid(self.capture.path, index),
                "pci.bus_id": bus_id(index),
            }
            row = []
            for field in fields:
                canonical = valid[field]
                if canonical in derived:
                    row.append(derived[canonical])
                    continue
                at = column.get(canonical, column.get(field))
                if at is None:
                    row.append("[N/A]")
                    continue
                row.append(_cell(rows[0][at], units[at], nounits))
            out.append(row)
        return out

    def app_rows(self, fields: list[str], nounits: bool) -> list[list[str]]:
        """One row per process per GPU for ``--query-compute-apps``."""
        names, units, rows = self.capture.table(self.phase, "query-compute-apps")
        valid = self.capture.valid_fields("compute-apps")
        column = {name: i for i, name in enumerate(names)}
        out = []
        for index in range(self.gpus):
            for base in rows:
                derived = {
                    "timestamp": _timestamp(),
                    "gpu_uuid": gpu_uuid(self.capture.path, index),
                    "gpu_bus_id": bus_id(index),
                    "pid": str(int(base[column["pid"]]) + 100000 * index),
                }
                if len(out) < len(self.pids):
                    derived["pid"] = self.pids[len(out)]
                row = []
                for field in fields:
                    canonical = valid[field]
                    if canonical in derived:
                        row.append(derived[canonical])
                    elif canonical in column:
                        at = column[canonical]
                        row.append(_cell(base[at], units[at], nounits))
                    else:
                        row.append("[N/A]")
                out.append(row)
        return out

    def header(self, switch: str, fields: list[str], nounits: bool) -> list[str]:
        """The CSV header: field names with ``[unit]`` as the real tool prints them."""
        what = "query-gpu" if switch == "gpu" else "query-compute-apps"
        names, units, _ = self.capture.table(self.phase, what)
        unit_of = dict(zip(names, units, strict=True))
        valid = self.capture.valid_fields(switch)
        out = []
        for field in fields:
            unit = unit_of.get(valid[field], "")
            out.append(f"{field} [{unit}]" if unit else field)
        return out

    def device_list(self) -> str:
        """``nvidia-smi -L`` for every GPU, MIG devices included."""
        gpu_line = re.compile(r"^GPU \d+: (.*) \(UUID: [^)]*\)$")
        mig_line = re.compile(r"^(\s+MIG .*Device\s+(\d+): )\(UUID: [^)]*\)$")
        body = self.capture.section("capabilities", "list")
        out = []
        for index in range(self.gpus):
            for line in body.splitlines():
                gpu = gpu_line.match(line)
                mig = mig_line.match(line)
                if gpu:
                    uuid = gpu_uuid(self.capture.path, index)
                    out.append(f"GPU {index}: {gpu.group(1)} (UUID: {uuid})")
                elif mig:
                    uuid = mig_uuid(self.capture.path, index, int(mig.group(2)))
                    out.append(f"{mig.group(1)}(UUID: {uuid})")
        return "\n".join(out) + "\n"


def _timestamp() -> str:
    now = time.time()
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"


def _cell(value: str, unit: str, nounits: bool) -> str:
    if nounits and unit and value.endswith(f" {unit}"):
        return value[: -len(unit) - 1]
    return value


def _write_csv(rows: list[list[str]]) -> None:
    sys.stdout.write("".join(", ".join(row) + "\n" for row in rows))
    sys.stdout.flush()


def _parse(argv: list[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if "=" in arg and arg.startswith("--"):
            key, value = arg.split("=", 1)
            opts[key] = value
        elif arg in ("-lms", "-l", "--loop-ms", "--loop"):
            if i + 1 >= len(argv):
                raise SystemExit(f"Option {arg} needs a value.")
            opts[arg] = argv[i + 1]
            i += 1
        else:
            opts[arg] = ""
        i += 1
    return opts


def _invalid_field(fields: list[str], valid: dict[str, str]) -> str | None:
    for field in fields:
        if field not in valid:
            return field
    return None


def main(argv: list[str]) -> int:
    """Answer one nvidia-smi command line from the capture."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    down = os.environ.get("SEGLAB_STANDIN_DOWN_FILE")
    if down and os.path.exists(down):
        sys.stdout.write(DRIVER_DOWN)
        return 9
    capture = Capture(resolve_capture(os.environ.get("SEGLAB_STANDIN_CAPTURE")))
    pids_file = os.environ.get("SEGLAB_STANDIN_PIDS_FILE")
    pids = ()
    if pids_file and os.path.exists(pids_file):
        with open(pids_file) as handle:
            pids = tuple(handle.read().split())
    tool = StandIn(
        capture,
        gpus=int(os.environ.get("SEGLAB_STANDIN_GPUS", "1")),
        phase=os.environ.get("SEGLAB_STANDIN_PHASE", "idle"),
        pids=pids,
    )
    opts = _parse(argv)
    if "--version" in opts:
        print(capture.section("capabilities", "version"))
        return 0
    for switch in ("gpu", "compute-apps"):
        if f"--help-query-{switch}" in opts:
            print(capture.section("capabilities", f"help-query-{switch}"))
            return 0
    if "-L" in opts or "--list-gpus" in opts:
        sys.stdout.write(tool.device_list())
        return 0
    if "-q" in opts or "--query" in opts:
        print(capture.section(tool.phase, "query (-q)"))
        return 0
    switch = "gpu" if "--query-gpu" in opts else "compute-apps"
    query = opts.get(f"--query-{switch}")
    if query is None:
        print(capture.section(tool.phase, "nvidia-smi (default table)"))
        return 0
    fields = [f.strip() for f in query.split(",") if f.strip()]
    bad = _invalid_field(fields, capture.valid_fields(switch))
    if bad is not None:
        sys.stdout.write(f'Field "{bad}" is not a valid field to query.\n\n')
        return 2
    fmt = set(opts.get("--format", "csv").split(","))
    nounits = "nounits" in fmt
    if "noheader" not in fmt:
        _write_csv([tool.header(switch, fields, nounits)])
    loop_ms = None
    if "-lms" in opts or "--loop-ms" in opts:
        loop_ms = int(opts.get("-lms", opts.get("--loop-ms", "1000")))
    elif "-l" in opts or "--loop" in opts:
        loop_ms = 1000 * int(opts.get("-l", opts.get("--loop", "5")))
    while True:
        rows = tool.gpu_rows(fields, nounits) if switch == "gpu" else tool.app_rows(fields, nounits)
        _write_csv(rows)
        if loop_ms is None:
            return 0
        time.sleep(loop_ms / 1000)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
