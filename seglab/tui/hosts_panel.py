"""The hosts & GPUs panel: a header per host, its datasets as the last ``seglab data ls``
found them, and an nvidia-smi-style row per GPU."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.text import Span, Text
from textual.widgets import Static

from seglab.telemetry.history import HistoryStore
from seglab.telemetry.sample import GpuSample, HostState, HostStatus
from seglab.tui.format import DASH, bar, clip_words, level_style, num, sparkline

BAR = 8
SPARK = 8
HOST_STYLES = {
    HostStatus.OK: "green",
    HostStatus.STARTING: "cyan",
    HostStatus.DEGRADED: "yellow",
    HostStatus.NO_GPU: "yellow",
    HostStatus.ERROR: "bold red",
}
LINK_STYLES = {
    "online": "green",
    "connecting": "cyan",
    "offline": "red",
    "auth-failed": "bold red",
    "host-key-refused": "bold red",
}


def host_header(
    state: HostState, link: tuple[str, str | None] | None, engine: str | None = None
) -> Text:
    """``name  link · telemetry status · cpu/ram · driver · engine`` and the problem."""
    out = Text(state.host, style="bold")
    if link is None:
        out.append("  this machine", style="green")
    else:
        out.append(f"  {link[0]}", style=LINK_STYLES.get(link[0], ""))
    if state.status is HostStatus.NO_GPU:  # the reason is on the line below
        out.append(" · no NVIDIA GPU: CPU only", style=HOST_STYLES[HostStatus.NO_GPU])
    else:
        out.append(f" · {state.source} ", style="dim")
        out.append(state.status.value, style=HOST_STYLES.get(state.status, ""))
    sample = state.host_sample
    if sample is not None:  # before the slow-changing words: a narrow panel keeps it
        used = None if sample.memory_used_mib is None else sample.memory_used_mib / 1024
        total = None if sample.memory_total_mib is None else sample.memory_total_mib / 1024
        out.append(
            f" · cpu {num(sample.cpu_percent, '.0f', '%')}"
            f" ram {num(used, '.1f')}/{num(total, '.1f')}G"
        )
    if state.driver_version:
        out.append(f" · driver {state.driver_version}", style="dim")
    if engine:
        out.append(f" · {engine}", style="dim")
    message = link[1] if link is not None and link[0] != "online" and link[1] else state.message
    if message and state.status is not HostStatus.NO_GPU:
        out.append(
            f"  {message.strip().splitlines()[0]}",
            style="red" if state.status == HostStatus.ERROR else "yellow",
        )
    out.no_wrap = True
    out.overflow = "ellipsis"
    return out


DATA_MARKS = {"✓": "green", "✗": "bold red"}


def data_line(row: str) -> Text:
    """``    data  cityscapes ✓ ade20k ✗`` from a host's compact dataset row.

    Each name is tied to its mark by a no-break space, so a line cut to a narrow panel
    (:func:`~seglab.tui.format.clip_words`) ends between datasets, never between a name
    and its mark."""
    out = Text("    data  ", style="dim")
    words = row.split(" ")
    for i, (name, mark) in enumerate(zip(words[::2], words[1::2], strict=True)):
        out.append(f"{' ' if i else ''}{name}\u00a0")
        out.append(mark, style=DATA_MARKS.get(mark, ""))
    out.no_wrap = True
    out.overflow = "ellipsis"
    return out


def gpu_row(gpu: GpuSample, history: Sequence[float | None]) -> Text:
    """One GPU: index, name, util bar + sparkline, memory bar, temperature, power, holder."""
    util = gpu.utilization_gpu
    out = Text(f" {gpu.index:>2} ")
    out.append(f"{(gpu.name or '?').removeprefix('NVIDIA ')[:14]:<14} ")
    out.append_text(bar(None if util is None else util / 100, BAR, level_style(util, 50, 90)))
    out.append(f" {num(util, '3.0f', '%'):>4} ")
    out.append(sparkline(history, SPARK), style="cyan")
    mem = gpu.memory_fraction
    out.append(" ")
    out.append_text(bar(mem, BAR, level_style(None if mem is None else mem * 100, 80, 95)))
    used = None if gpu.memory_used_mib is None else gpu.memory_used_mib / 1024
    total = None if gpu.memory_total_mib is None else gpu.memory_total_mib / 1024
    out.append(f" {num(used, '.1f')}/{num(total, '.0f')}G".ljust(12))
    out.append(
        f"{num(gpu.temperature_c, '.0f', '°C'):>5}", style=level_style(gpu.temperature_c, 75, 85)
    )
    power = f"{num(gpu.power_draw_w, '.0f')}/{num(gpu.power_limit_w, '.0f')}W"
    out.append(f" {power:>9} ")
    owners = ", ".join(dict.fromkeys(p.owner for p in gpu.processes))
    if gpu.mig_instances:
        owners = f"MIG x{len(gpu.mig_instances)}" + (f" {owners}" if owners else "")
    out.append(owners or DASH, style="bold" if owners else "dim")
    out.no_wrap = True
    out.overflow = "ellipsis"
    return out


def render_hosts(
    states: Sequence[HostState],
    history: HistoryStore | None,
    links: Mapping[str, tuple[str, str | None]],
    hint: str | None,
    engines: Mapping[str, str] | None = None,
    *,
    data: Mapping[str, str] | None = None,
) -> Text:
    """The whole panel as one text (one render per telemetry tick); ``data`` holds each
    host's compact dataset row (``cityscapes ✓ ade20k ✗``)."""
    lines: list[Text] = []
    for state in states:
        lines.append(host_header(state, links.get(state.host), (engines or {}).get(state.host)))
        row = (data or {}).get(state.host)
        if row:
            lines.append(data_line(row))
        if not state.gpus and state.status == HostStatus.NO_GPU:
            why = f" · {state.message}" if state.message else ""
            lines.append(Text(f"    runs here use the CPU ({state.host}:cpu){why}", style="dim"))
        for gpu in sorted(state.gpus, key=lambda g: g.index):
            gpu_history = history.get(state.host, gpu.uuid) if history is not None else None
            values = gpu_history.tail("utilization_gpu", SPARK) if gpu_history else []
            lines.append(gpu_row(gpu, values))
    if not lines:
        lines.append(Text("waiting for the first telemetry reading…", style="dim"))
    if hint:
        lines.append(Text(hint, style="dim italic"))
    panel = Text("\n").join(lines)
    panel.no_wrap = True
    panel.overflow = "ellipsis"
    return panel


class HostsPanel(Static):
    """Hosts and their GPUs, each line cut on a word boundary to the panel's width; a new
    layout only when the number of lines changes."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self._shown: tuple[str, list[Span]] | None = None
        self._text = Text()
        self._lines = 0

    def show(self, text: Text) -> None:
        """Display ``text`` unless it is what is already shown."""
        shown = (text.plain, text.spans)
        if shown == self._shown:
            return
        lines = text.plain.count("\n") + 1
        self._shown = shown
        self._text = text
        self._draw(layout=lines != self._lines)
        self._lines = lines

    def on_resize(self) -> None:
        """Cut the lines again for the new width."""
        self._draw(layout=False)

    def _draw(self, layout: bool) -> None:
        width = self.content_size.width
        panel = Text("\n").join(clip_words(line, width) for line in self._text.split("\n"))
        panel.no_wrap = True
        panel.overflow = "ellipsis"
        self.update(panel, layout=layout)
