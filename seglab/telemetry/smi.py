"""The nvidia-smi source: one long-lived CSV stream per host, parsed line by line.

The stream is ``nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits -lms N``;
the fields are chosen from what the driver lists in ``--help-query-gpu``. Processes come
from ``--query-compute-apps`` (and MIG devices from ``-L``) at a lower rate. A stream that
dies or stalls is restarted with exponential backoff; meanwhile the host is ``degraded``
with the reason.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from seglab.errors import UnavailableError
from seglab.machines import CommandError, Machine, Stream
from seglab.telemetry import values
from seglab.telemetry.sample import GpuSample, HostState, HostStatus, MigInstance, ProcessSample

log = logging.getLogger(__name__)

# Sample attribute -> nvidia-smi field names, best first (older drivers know the later ones).
WANTED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("index", ("index",)),
    ("uuid", ("uuid", "gpu_uuid")),
    ("count", ("count",)),
    ("name", ("name", "gpu_name")),
    ("pci_bus_id", ("pci.bus_id", "gpu_bus_id")),
    ("utilization_gpu", ("utilization.gpu",)),
    ("utilization_memory", ("utilization.memory",)),
    ("memory_used_mib", ("memory.used",)),
    ("memory_total_mib", ("memory.total",)),
    ("temperature_c", ("temperature.gpu",)),
    ("power_draw_w", ("power.draw", "power.draw.instant")),
    ("power_limit_w", ("power.limit", "enforced.power.limit")),
    ("fan_percent", ("fan.speed",)),
    ("clock_sm_mhz", ("clocks.current.sm", "clocks.sm")),
    ("clock_memory_mhz", ("clocks.current.memory", "clocks.mem")),
    ("pstate", ("pstate",)),
    ("ecc_volatile_uncorrected", ("ecc.errors.uncorrected.volatile.total",)),
    ("mig_mode", ("mig.mode.current",)),
    ("throttle_mask", ("clocks_event_reasons.active", "clocks_throttle_reasons.active")),
    ("driver_version", ("driver_version",)),
)
REQUIRED = ("index", "uuid")
APP_FIELDS = ("gpu_uuid", "pid", "process_name", "used_gpu_memory")

_TEXT = {"uuid", "name", "pci_bus_id", "pstate", "mig_mode", "driver_version"}
_INT = {"index", "count", "ecc_volatile_uncorrected", "throttle_mask"}
_QUOTED = re.compile(r'"([^"]+)"')
_GPU_LINE = re.compile(r"^GPU (\d+): .*\(UUID: ([^)]+)\)\s*$")
_MIG_LINE = re.compile(r"^\s+MIG (\S+)\s+Device\s+(\d+): \(UUID: ([^)]+)\)\s*$")


class SmiError(UnavailableError):
    """nvidia-smi could not give GPU data; the message says why, for the host's state."""


def supported_fields(help_text: str) -> set[str]:
    """Every field name ``nvidia-smi --help-query-gpu`` lists (aliases included)."""
    names: set[str] = set()
    for line in help_text.splitlines():
        if line.startswith('"'):
            names.update(_QUOTED.findall(line))
    return names


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """The fields one stream asks for, in column order, with the attribute each fills."""

    attributes: tuple[str, ...]
    fields: tuple[str, ...]

    @classmethod
    def choose(cls, supported: Iterable[str]) -> FieldPlan:
        """The best field for each wanted attribute that this driver supports."""
        known = set(supported)
        attributes: list[str] = []
        fields: list[str] = []
        for attribute, candidates in WANTED:
            for name in candidates:
                if name in known:
                    attributes.append(attribute)
                    fields.append(name)
                    break
        missing = [attribute for attribute in REQUIRED if attribute not in attributes]
        if missing:
            raise SmiError(f"nvidia-smi cannot report {', '.join(missing)} on this driver")
        return cls(tuple(attributes), tuple(fields))

    def query(self) -> str:
        """The ``--query-gpu=`` value."""
        return ",".join(self.fields)


@dataclass(frozen=True, slots=True)
class ParsedRow:
    """One GPU line of the stream: the sample plus what belongs to the host."""

    sample: GpuSample
    count: int | None
    driver_version: str | None


def split_csv(line: str) -> list[str]:
    """The cells of one nvidia-smi CSV line (``, `` separated, quotes honoured)."""
    return next(csv.reader((line,), skipinitialspace=True), [])


def split_gpu_line(plan: FieldPlan, line: str) -> list[str]:
    """The cells of one ``--query-gpu`` line: a plain ``, `` split when that gives the plan's
    columns and nothing is quoted, else the CSV reader's (the stream's per-sample path)."""
    if '"' not in line:
        cells = line.split(", ")
        if len(cells) == len(plan.attributes):
            return cells
    return split_csv(line)


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return values.number(cell)  # a unit, or an absent-value token
    return value if math.isfinite(value) else None


def _integer(cell: str) -> int | None:
    try:
        return int(cell)
    except ValueError:
        return values.integer(cell)  # hexadecimal, a unit, or an absent-value token


@functools.lru_cache(maxsize=16)
def _converters(attributes: tuple[str, ...]) -> tuple[Callable[[str], Any], ...]:
    """How each column of a plan is read (decided once per plan, not per cell)."""
    return tuple(
        values.text if a in _TEXT else _integer if a in _INT else _number for a in attributes
    )


def parse_gpu_row(plan: FieldPlan, cells: Sequence[str], host: str, now: float) -> ParsedRow:
    """A sample from the cells of one ``--query-gpu`` line (raises ValueError if partial)."""
    if len(cells) != len(plan.attributes):
        raise ValueError(f"expected {len(plan.attributes)} columns, got {len(cells)}")
    kwargs: dict[str, Any] = {
        attribute: convert(cell)
        for attribute, convert, cell in zip(
            plan.attributes, _converters(plan.attributes), cells, strict=True
        )
    }
    if kwargs["index"] is None or kwargs["uuid"] is None:
        raise ValueError("line has no GPU index or UUID")
    count = kwargs.pop("count", None)
    driver = kwargs.pop("driver_version", None)
    kwargs["throttle_reasons"] = values.throttle_reasons(kwargs.pop("throttle_mask", None))
    return ParsedRow(GpuSample(host=host, time=now, **kwargs), count, driver)


def parse_csv_table(plan: FieldPlan, text: str, host: str, now: float) -> list[GpuSample]:
    """Every GPU of a whole ``--query-gpu`` output (header lines are skipped)."""
    samples = []
    for line in text.splitlines():
        cells = split_gpu_line(plan, line) if line.strip() else []
        if not cells or cells[0] == plan.fields[0]:
            continue
        samples.append(parse_gpu_row(plan, cells, host, now).sample)
    return samples


def parse_compute_apps(text: str, fields: Sequence[str] = APP_FIELDS) -> list[ProcessSample]:
    """Processes from ``--query-compute-apps=<fields>`` output (with or without header)."""
    column = {name: i for i, name in enumerate(fields)}
    processes = []
    for line in text.splitlines():
        cells = split_csv(line)
        if len(cells) != len(fields):
            continue
        pid = values.integer(cells[column["pid"]])
        uuid = values.text(cells[column["gpu_uuid"]])
        if pid is None or uuid is None:
            continue  # the header line, or a row without identity
        processes.append(
            ProcessSample(
                pid=pid,
                gpu_uuid=uuid,
                used_memory_mib=values.number(cells[column["used_gpu_memory"]]),
                process_name=values.text(cells[column["process_name"]]),
            )
        )
    return processes


def parse_device_list(text: str) -> dict[str, list[MigInstance]]:
    """MIG devices per parent GPU UUID from ``nvidia-smi -L``."""
    out: dict[str, list[MigInstance]] = {}
    parent: str | None = None
    for line in text.splitlines():
        gpu = _GPU_LINE.match(line)
        if gpu:
            parent = gpu.group(2).strip()
            out[parent] = []
            continue
        mig = _MIG_LINE.match(line)
        if mig and parent is not None:
            out[parent].append(
                MigInstance(index=int(mig.group(2)), profile=mig.group(1), uuid=mig.group(3))
            )
    return out


def parse_query_mig(text: str) -> dict[str, list[MigInstance]]:
    """MIG devices per parent PCI bus id from ``nvidia-smi -q`` (with their memory use)."""
    out: dict[str, list[MigInstance]] = {}
    bus: str | None = None
    current: dict[str, Any] | None = None
    section = ""

    def close() -> None:
        if current is not None and bus is not None:
            out.setdefault(bus, []).append(MigInstance(**current))

    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith("GPU "):
            close()
            current = None
            bus = line[4:].strip()
            continue
        stripped = line.strip()
        if stripped == "MIG Device":
            close()
            current = {"index": 0}
            section = ""
            continue
        if current is None:
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= 4 and stripped:
            close()
            current = None
            continue
        if ":" not in stripped:
            section = stripped
            continue
        key, _, value = (part.strip() for part in stripped.partition(":"))
        if key == "Index":
            current["index"] = values.integer(value) or 0
        elif key == "GPU Instance ID":
            current["gpu_instance_id"] = values.integer(value)
        elif key == "Compute Instance ID":
            current["compute_instance_id"] = values.integer(value)
        elif key == "Multiprocessor count":
            current["sm_count"] = values.integer(value)
        elif section == "Shared FB Memory Usage" and key == "Total":
            current["memory_total_mib"] = values.number(value)
        elif section == "Shared FB Memory Usage" and key == "Used":
            current["memory_used_mib"] = values.number(value)
    close()
    return out


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


class SmiSource:
    """GPU telemetry of one host from a long-lived nvidia-smi CSV stream."""

    kind = "nvidia-smi"

    def __init__(
        self,
        host: str,
        machine: Machine,
        *,
        nvidia_smi: str = "nvidia-smi",
        interval: float = 1.0,
        apps_interval: float = 5.0,
        backoff: tuple[float, float] = (0.5, 30.0),
        stall_after: float | None = None,
        missing_means_no_gpu: bool = False,
        attribute: Callable[[list[ProcessSample]], Awaitable[list[ProcessSample]]] | None = None,
        on_sample: Callable[[GpuSample], None] | None = None,
    ) -> None:
        self.host = host
        self.machine = machine
        self.nvidia_smi = nvidia_smi
        self.interval = interval
        self.apps_interval = apps_interval
        self.backoff = backoff
        self.stall_after = stall_after or max(5.0 * interval, 5.0)
        self.missing_means_no_gpu = missing_means_no_gpu
        self.attribute = attribute
        self.on_sample = on_sample
        self.plan: FieldPlan | None = None
        self.stream_pid: int | None = None
        self.samples_total = 0
        self.partial_lines = 0
        self._status = HostStatus.STARTING
        self._message: str | None = "starting nvidia-smi"
        self._latest: dict[str, GpuSample] = {}
        self._processes: dict[str, tuple[ProcessSample, ...]] = {}
        self._mig: dict[str, tuple[MigInstance, ...]] = {}
        self._driver: str | None = None
        self._updated: float | None = None
        self._restarts = 0
        self._apps_polled = False
        self._changed = asyncio.Event()

    # -- reading ----------------------------------------------------------------------

    def state(self) -> HostState:
        """What is known now (the last samples stay listed while the host is degraded)."""
        gpus = tuple(
            replace(
                sample,
                processes=self._processes.get(sample.uuid, ()),
                mig_instances=self._mig.get(sample.uuid, ()),
            )
            for sample in sorted(self._latest.values(), key=lambda s: s.index)
        )
        return HostState(
            host=self.host,
            source=self.kind,
            status=self._status,
            message=self._message,
            gpus=gpus,
            updated=self._updated,
            driver_version=self._driver,
            restarts=self._restarts,
        )

    async def next_change(self) -> HostState:
        """Wait for the next complete tick or status change, and return the state."""
        await self._changed.wait()
        return self.state()

    async def wait_ready(self, timeout: float) -> HostState:
        """Wait for the first full reading (GPUs and processes) or a failure state."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            ready = state.status is HostStatus.OK and self._apps_polled
            if ready or state.status in (HostStatus.DEGRADED, HostStatus.ERROR, HostStatus.NO_GPU):
                return state
            left = deadline - time.monotonic()
            if left <= 0:
                return replace(
                    state,
                    status=HostStatus.DEGRADED,
                    message=f"no complete reading from nvidia-smi within {timeout:g} s",
                )
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                continue

    # -- running ----------------------------------------------------------------------

    async def run(self) -> None:
        """Keep the stream alive until cancelled, restarting it with backoff."""
        delay = self.backoff[0]
        apps = asyncio.create_task(self._poll_apps())
        try:
            while True:
                before = self.samples_total
                try:
                    if self.plan is None:
                        self.plan = await self._probe()
                    await self._stream()
                except SmiError as exc:
                    problem = str(exc)
                if self._status is HostStatus.NO_GPU:
                    return
                if self.samples_total > before:
                    delay = self.backoff[0]
                else:
                    self.plan = None  # ask the driver again: it may have been replaced
                self._restarts += 1
                self._set(HostStatus.DEGRADED, f"{problem}; retrying in {delay:g} s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])
        finally:
            apps.cancel()
            await asyncio.gather(apps, return_exceptions=True)

    async def _probe(self) -> FieldPlan:
        return FieldPlan.choose(
            supported_fields(await self._run([self.nvidia_smi, "--help-query-gpu"]))
        )

    async def _run(self, argv: list[str]) -> str:
        """Stdout of a short nvidia-smi command; raises SmiError with the tool's message."""
        try:
            result = await self.machine.run(argv, timeout=max(10.0, 3 * self.interval))
        except CommandError as exc:
            if self.missing_means_no_gpu and exc.not_found:
                self._set(HostStatus.NO_GPU, f"no NVIDIA GPU ({exc})")
            raise SmiError(str(exc)) from exc
        except asyncio.TimeoutError as exc:
            raise SmiError(f"{argv[0]} {argv[1]} timed out") from exc
        if result.returncode == 127 and self.missing_means_no_gpu:
            self._set(HostStatus.NO_GPU, f"no NVIDIA GPU ({argv[0]} not found)")
            raise SmiError(f"{argv[0]} not found")
        if result.returncode != 0:
            reason = _first_line(result.stdout) or _first_line(result.stderr)
            raise SmiError(f"{argv[0]} failed (exit {result.returncode}): {reason}")
        return result.stdout

    async def _stream(self) -> NoReturn:
        """Read one stream until it ends (raises SmiError with the reason it ended)."""
        assert self.plan is not None
        argv = [
            self.nvidia_smi,
            f"--query-gpu={self.plan.query()}",
            "--format=csv,noheader,nounits",
            "-lms",
            str(max(1, round(self.interval * 1000))),
        ]
        try:
            stream = await self.machine.stream(argv)
        except CommandError as exc:
            if self.missing_means_no_gpu and exc.not_found:
                self._set(HostStatus.NO_GPU, f"no NVIDIA GPU ({exc})")
            raise SmiError(str(exc)) from exc
        self.stream_pid = stream.pid
        noise: list[str] = []
        try:
            await self._read(stream, noise)
        finally:
            returncode, stderr = await stream.finish()
            self.stream_pid = None
        reason = _first_line("\n".join(noise)) or _first_line(stderr)
        if returncode is not None and returncode < 0:
            detail = f"killed by signal {-returncode}"
        else:
            detail = f"exit {returncode}"
        suffix = f": {reason}" if reason else ""
        raise SmiError(f"the nvidia-smi stream ended ({detail}){suffix}")

    async def _read(self, stream: Stream, noise: list[str]) -> None:
        try:
            async with asyncio.timeout(self.stall_after) as stall:
                await self._read_lines(stream, noise, stall)
        except TimeoutError as exc:
            raise SmiError(f"nvidia-smi sent nothing for {self.stall_after:g} s") from exc

    async def _read_lines(self, stream: Stream, noise: list[str], stall: asyncio.Timeout) -> None:
        """Read samples until the stream ends; ``stall`` is pushed back once per complete
        tick (one timer per tick, not one task per line as ``wait_for`` would make)."""
        assert self.plan is not None
        loop = asyncio.get_running_loop()
        seen: set[int] = set()
        while True:
            line = await stream.readline()
            if line is None:
                return
            if not line.strip():
                continue
            try:
                row = parse_gpu_row(
                    self.plan, split_gpu_line(self.plan, line), self.host, time.time()
                )
            except ValueError:
                self.partial_lines += 1
                noise.append(line)
                del noise[:-5]
                continue
            sample = row.sample
            self.samples_total += 1
            self._latest[sample.uuid] = sample
            self._driver = row.driver_version or self._driver
            if self.on_sample is not None:
                self.on_sample(sample)
            seen.add(sample.index)
            if row.count is None or len(seen) >= row.count:
                seen.clear()
                self._updated = sample.time
                self._set(HostStatus.OK, None)
                stall.reschedule(loop.time() + self.stall_after)

    async def _poll_apps(self) -> None:
        """Processes (and MIG devices) at the lower rate, while the stream runs."""
        while True:
            if self._status is HostStatus.OK:
                try:
                    await self._read_apps()
                except SmiError as exc:
                    log.warning("%s: process list unavailable: %s", self.host, exc)
                except Exception:
                    # Keep the GPU stream's process list alive whatever attribution hits.
                    log.exception("%s: reading the process list failed", self.host)
                if not self._apps_polled:
                    self._apps_polled = True
                    self._notify()
                await asyncio.sleep(self.apps_interval)
            else:
                await self._changed.wait()

    async def _read_apps(self) -> None:
        text = await self._run(
            [
                self.nvidia_smi,
                f"--query-compute-apps={','.join(APP_FIELDS)}",
                "--format=csv,noheader,nounits",
            ]
        )
        processes = parse_compute_apps(text)
        if self.attribute is not None:
            processes = await self.attribute(processes)
        grouped: dict[str, list[ProcessSample]] = {}
        for process in processes:
            grouped.setdefault(process.gpu_uuid, []).append(process)
        self._processes = {uuid: tuple(group) for uuid, group in grouped.items()}
        if any(sample.mig_mode == "Enabled" for sample in self._latest.values()):
            listing = await self._run([self.nvidia_smi, "-L"])
            self._mig = {u: tuple(m) for u, m in parse_device_list(listing).items()}
        else:
            self._mig = {}

    def _set(self, status: HostStatus, message: str | None) -> None:
        changed = (status, message) != (self._status, self._message)
        self._status = status
        self._message = message
        if changed or status is HostStatus.OK:
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
