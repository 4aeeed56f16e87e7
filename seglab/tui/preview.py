"""`p`: the prediction samples of the selected run, or of several variants side by side.

Images are drawn by ``textual-image``: Kitty graphics or Sixel where the terminal answers
for them, coloured half-block cells everywhere else (tmux, SSH, and when the output is not
a terminal at all), so the preview works in every terminal. ``textual_image`` asks the
terminal what it supports when it is first imported (and imports numpy): the dashboard
imports this module when ``p`` is first pressed, so its first frame does not wait for it;
a terminal's answer that Textual's input reader takes first leaves the half-block cells.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

from PIL import Image as PILImage
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Static
from textual_image import _terminal as image_terminal

from seglab.errors import SeglabError

if TYPE_CHECKING:
    from seglab.report.gather import SampleImage
    from seglab.tui.runs_table import RunsTable
    from seglab.workstation import Workstation


def _measurable_terminal() -> None:
    """textual-image measures a cell as the terminal's pixels over its columns and rows,
    and divides by zero where the terminal reports none (some ptys and consoles do):
    there its own fallback cell (VT340: 10x20 pixels) is set before anything is drawn."""
    stream = sys.__stdout__
    if stream is None or not stream.isatty():
        return
    try:
        size = os.get_terminal_size(stream.fileno())
    except OSError:
        return  # not a terminal after all: textual-image falls back by itself
    if size.columns == 0 or size.lines == 0:
        image_terminal.get_cell_size._result = image_terminal.CellSize(10, 20)  # type: ignore[attr-defined]


_measurable_terminal()

# textual-image measures the terminal when these are imported: after the guard above.
from textual_image.renderable import Image as ChosenRenderable  # noqa: E402
from textual_image.renderable import UnicodeImage  # noqa: E402
from textual_image.widget import HalfcellImage  # noqa: E402
from textual_image.widget import Image as AutoImage  # noqa: E402

# Half-block cells rather than textual-image's last resort (unicode shading) when the
# terminal offers neither Kitty graphics nor Sixel.
ImageWidget = HalfcellImage if ChosenRenderable is UnicodeImage else AutoImage

VARIANT_VIEWS = ("overlay", "pred", "error")


@dataclass
class Loaded:
    """One step of the preview: the iteration, and every run's samples at it."""

    iteration: int
    iterations: list[int]
    samples: dict[str, list[SampleImage]]


def chosen_runs(table: RunsTable) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The marked runs (else the selected one) and the variants of its recipe."""
    rows = table.rows_by_id
    ids = table.chosen()
    if not ids:
        return [], []
    recipe = rows[ids[0]].recipe
    siblings = [(i, r.variant) for i, r in rows.items() if r.recipe == recipe]
    return [(i, rows[i].variant) for i in ids], siblings


class PreviewScreen(ModalScreen[None]):
    """The latest prediction samples, stepped through image by image and evaluation by
    evaluation; with several runs, one image across them side by side."""

    BINDINGS = [
        Binding("escape,q,p", "dismiss", "close"),
        Binding("left", "image(-1)", "previous image"),
        Binding("right", "image(1)", "next image"),
        Binding("up,shift+left", "iteration(-1)", "earlier evaluation"),
        Binding("down,shift+right", "iteration(1)", "later evaluation"),
        Binding("v", "variants", "all variants"),
        Binding("e", "view", "overlay/prediction/error"),
    ]

    DEFAULT_CSS = """
    PreviewScreen #preview-panels { height: 1fr; }
    PreviewScreen .panel { width: 1fr; height: 100%; }
    PreviewScreen .panel Static { height: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    PreviewScreen .panel HalfcellImage, PreviewScreen .panel AutoImage,
    PreviewScreen .panel SixelImage { width: auto; height: auto; }
    PreviewScreen #preview-dialog { width: 100%; height: 100%; max-height: 100%;
                                    padding: 0 1; }
    """

    def __init__(
        self,
        workstation: Workstation,
        runs: Sequence[tuple[str, str]],
        variant_runs: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__()
        self.workstation = workstation
        self.runs = list(runs)
        self.chosen = list(runs)
        self.variant_runs = list(variant_runs) or list(runs)
        self.image_index = 0
        self.view = 0
        self.loaded: Loaded | None = None

    def compose(self) -> ComposeResult:
        """Title, the image panels, the key hint."""
        with Vertical(classes="dialog", id="preview-dialog"):
            yield Static(id="preview-title")
            yield Horizontal(id="preview-panels")
            yield Static(
                "←/→ image · ↑/↓ evaluation · v variants · e view · esc closes",
                classes="hint",
            )

    def on_mount(self) -> None:
        """Load the latest evaluation's samples."""
        self._load(None)

    @work(thread=True, exclusive=True, group="preview")
    def _load(self, iteration: int | None) -> None:
        try:
            loaded = self._read(iteration)
        except SeglabError as exc:
            self.app.call_from_thread(self._show_message, f"samples: {exc}")
            return
        self.app.call_from_thread(self._show, loaded)

    def _read(self, iteration: int | None) -> Loaded | None:
        lead = self.runs[0][0]
        iterations = self.workstation.sample_iterations(lead)
        if not iterations:
            return None
        chosen = iterations[-1] if iteration is None else iteration
        samples = {}
        for run_id, _ in self.runs:
            own = self.workstation.sample_iterations(run_id) if run_id != lead else iterations
            at = [i for i in own if i <= chosen]
            if at:
                samples[run_id] = self.workstation.samples(run_id, at[-1])
        return Loaded(chosen, iterations, samples)

    def _show_message(self, message: str) -> None:
        self.query_one("#preview-title", Static).update(Text(message, style="bold"))

    def _show(self, loaded: Loaded | None) -> None:
        if loaded is None:
            self._show_message("no prediction samples yet (they come with each evaluation)")
            return
        self.loaded = loaded
        self.call_later(self._draw)

    def _ids(self) -> list[str]:
        if self.loaded is None or not self.loaded.samples:
            return []
        first = next(iter(self.loaded.samples.values()))
        return [s.id for s in first]

    async def _draw(self) -> None:
        loaded = self.loaded
        ids = self._ids()
        if loaded is None or not ids:
            return
        self.image_index %= len(ids)
        sample_id = ids[self.image_index]
        step = loaded.iterations.index(loaded.iteration) + 1
        view = VARIANT_VIEWS[self.view]
        names = ", ".join(variant for _, variant in self.runs)
        self.query_one("#preview-title", Static).update(
            Text.assemble(
                (f"{names}", "bold"),
                f"  iter {loaded.iteration} ({step}/{len(loaded.iterations)})",
                f"  ·  {sample_id} ({self.image_index + 1}/{len(ids)})",
            )
        )
        panels = self.query_one("#preview-panels", Horizontal)
        await panels.remove_children()
        await panels.mount_all(self._panels(sample_id, view))

    def _panels(self, sample_id: str, view: str) -> list[Vertical]:
        assert self.loaded is not None
        out = []
        lead = self.loaded.samples.get(self.runs[0][0], [])
        first = next((s for s in lead if s.id == sample_id), None)
        single = len(self.runs) == 1
        if first is not None:
            for key, caption in (("image", "image"), ("gt", "ground truth")):
                if key in first.views:
                    out.append(_panel(caption, first.views[key]))
        for run_id, variant in self.runs:
            found = next(
                (s for s in self.loaded.samples.get(run_id, []) if s.id == sample_id), None
            )
            if found is None:
                continue
            for key in ("overlay", "error") if single else (view,):
                if key in found.views:
                    out.append(_panel(key if single else f"{variant}: {key}", found.views[key]))
        return out

    async def action_image(self, step: int) -> None:
        """The previous or next sample image."""
        self.image_index += step
        await self._draw()

    def action_iteration(self, step: int) -> None:
        """An earlier or later evaluation."""
        if self.loaded is None:
            return
        iterations = self.loaded.iterations
        position = iterations.index(self.loaded.iteration) + step
        if 0 <= position < len(iterations):
            self._load(iterations[position])

    def action_variants(self) -> None:
        """Show every variant of the recipe side by side (again: back to the runs chosen)."""
        self.runs = self.variant_runs if self.runs == self.chosen else self.chosen
        self._load(None if self.loaded is None else self.loaded.iteration)

    async def action_view(self) -> None:
        """Cycle what each variant shows: overlay, prediction, error map."""
        self.view = (self.view + 1) % len(VARIANT_VIEWS)
        await self._draw()

    async def action_dismiss(self, result: None = None) -> None:
        """Close."""
        self.dismiss(result)


class HasWorkstation(Protocol):
    """An app that holds a workstation (the dashboard)."""

    @property
    def workstation(self) -> Workstation:
        """The façade."""


def compare_samples(app: object, runs: Sequence[tuple[str, str]]) -> PreviewScreen:
    """A preview of `runs` side by side (the comparison's `p`), on `app`'s workstation."""
    holder = cast("HasWorkstation", app)
    return PreviewScreen(holder.workstation, runs, runs)


def _panel(caption: str, png: bytes) -> Vertical:
    with PILImage.open(io.BytesIO(png)) as image:
        picture = image.convert("RGB")
    return Vertical(Static(caption), ImageWidget(picture), classes="panel")
