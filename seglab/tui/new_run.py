"""The new-run dialog: recipe (shipped or from a folder), variants, placement, runtime."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, OptionList, Select, SelectionList, Static
from textual.widgets.option_list import Option

from seglab.errors import SeglabError
from seglab.kinds import RuntimeKind
from seglab.registry import RunRecord

if TYPE_CHECKING:
    from seglab.recipes import RecipeFile
    from seglab.workstation import Workstation

log = logging.getLogger(__name__)

RUNTIMES = (
    ("auto", RuntimeKind.AUTO),
    ("process", RuntimeKind.PROCESS),
    ("docker", RuntimeKind.DOCKER),
)


def default_placement(placements: Sequence[tuple[str, str]]) -> str:
    """The first choice, unless no GPU is free anywhere: then the first host's CPU."""
    if any(value != "auto" and not value.endswith(":cpu") for value, _ in placements):
        return placements[0][0]
    return next((value for value, _ in placements if value.endswith(":cpu")), placements[0][0])


def recipe_files(shipped: Sequence[Path], folder: Path | None) -> list[Path]:
    """Shipped recipes, then the ``*.yaml`` files of ``folder``."""
    found = list(shipped)
    if folder is not None and folder.is_dir():
        found += sorted(p for p in folder.glob("*.yaml") if p not in found)
    return found


class NewRunScreen(ModalScreen[list[RunRecord] | None]):
    """Pick a recipe, its variants and where to run them; launching closes the dialog."""

    BINDINGS = [Binding("escape", "cancel", "cancel"), Binding("ctrl+s", "launch", "launch")]

    def __init__(
        self,
        workstation: Workstation,
        placements: Sequence[tuple[str, str]],
        folder: Path | None = None,
    ) -> None:
        super().__init__()
        self.workstation = workstation
        self.placements = list(placements)
        self.placement = default_placement(self.placements)
        if self.placement != self.placements[0][0]:  # say why auto is not the default
            self.placements = [
                (value, f"{label} (none free now)" if value == "auto" else label)
                for value, label in self.placements
            ]
        self.folder = folder
        self.files: list[Path] = []
        self.recipe: RecipeFile | None = None
        self.recipe_path: Path | None = None

    def compose(self) -> ComposeResult:
        """Recipe list, variants, placement, runtime, buttons."""
        with VerticalScroll(classes="dialog wide-dialog", id="new-run") as dialog:
            dialog.border_title = "New run"
            dialog.border_subtitle = "tab: next field (scrolls) · ctrl+s launch · esc cancel"
            dialog.can_focus = False  # tab goes to the fields, which scroll into view
            yield Input(
                value=str(self.folder or ""),
                id="recipe-folder",
                placeholder="a folder of recipes or a recipe file (enter to load)",
            )
            with Horizontal(id="new-run-body"):
                yield OptionList(id="recipes")
                with Vertical(id="new-run-right"):
                    yield Static("", id="recipe-info")
                    yield SelectionList[str](id="variants")
            with Horizontal(classes="row"):
                yield Select(
                    [(label, value) for value, label in self.placements],
                    value=self.placement,
                    allow_blank=False,
                    id="placement",
                )
                yield Input(placeholder="or type HOST:0,1 / HOST:cpu", id="placement-custom")
                runtime = Select(RUNTIMES, value=RuntimeKind.AUTO, allow_blank=False, id="runtime")
                runtime.tooltip = "auto: docker when an engine answers, else a process"
                yield runtime
            yield Static("", id="new-run-error")
            with Horizontal(classes="buttons"):
                yield Button("Launch (ctrl+s)", id="launch", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        """List the recipes and load the first."""
        self._list(self.folder)
        self.query_one("#recipes", OptionList).focus()

    def _list(self, folder: Path | None) -> None:
        self.files = recipe_files(self.workstation.shipped_recipes(), folder)
        options = self.query_one("#recipes", OptionList)
        options.clear_options()
        shipped = set(self.workstation.shipped_recipes())
        options.add_options(
            [
                Option(f"{p.stem}" + ("  (shipped)" if p in shipped else ""), id=str(i))
                for i, p in enumerate(self.files)
            ]
        )
        if self.files:
            options.highlighted = 0

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """A folder lists its recipes; a file is loaded directly."""
        if event.input.id != "recipe-folder":
            return
        event.stop()
        path = Path(event.value).expanduser()
        if path.is_file():
            self.files.append(path)
            self.query_one("#recipes", OptionList).add_option(
                Option(path.stem, id=str(len(self.files) - 1))
            )
            self.query_one("#recipes", OptionList).highlighted = len(self.files) - 1
        elif path.is_dir():
            self._list(path)
        else:
            self._error(f"{path}: no such file or folder")

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        """Load the highlighted recipe (in a thread: it reads files)."""
        if event.option.id is not None:
            self._load(self.files[int(event.option.id)])

    @work(thread=True, exclusive=True, group="recipe")
    def _load(self, path: Path) -> None:
        try:
            loaded = self.workstation.load_recipe(path)
        except SeglabError as exc:  # a recipe error is shown inline, with its file:line
            log.info("recipe %s does not load: %s", path, exc)
            self.app.call_from_thread(self._show_recipe, path, None, str(exc))
            return
        self.app.call_from_thread(self._show_recipe, path, loaded, None)

    def _show_recipe(self, path: Path, loaded: RecipeFile | None, error: str | None) -> None:
        self.recipe, self.recipe_path = loaded, path
        variants = self.query_one("#variants", SelectionList)
        variants.clear_options()
        info = self.query_one("#recipe-info", Static)
        if loaded is None:
            info.update(Text(error or "", style="red"))
            return
        base = loaded.variants[0].recipe
        size = f"{base.resources.gpus} GPU(s) per run"
        if base.resources.nodes > 1:  # placed as one pool per member, typed below
            size = (
                f"{base.resources.nodes} hosts x {base.resources.gpus} GPU(s) per run "
                "(type one pool per host: H1:0-7,H2:0-7)"
            )
        info.update(f"{base.name}: {base.model.arch} · {len(loaded.variants)} variant(s) · {size}")
        variants.add_options([(v.name, v.name, True) for v in loaded.variants])
        self._error("")

    def _error(self, message: str) -> None:
        self.query_one("#new-run-error", Static).update(Text(message, style="bold red"))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Launch or cancel."""
        if event.button.id == "launch":
            self.action_launch()
        else:
            self.action_cancel()

    def action_cancel(self) -> None:
        """Close without launching."""
        self.dismiss(None)

    def action_launch(self) -> None:
        """Start the chosen variants where asked."""
        if self.recipe is None or self.recipe_path is None:
            self._error("choose a recipe that loads first")
            return
        chosen = list(self.query_one("#variants", SelectionList).selected)
        if not chosen:
            self._error("select at least one variant (space toggles)")
            return
        custom = self.query_one("#placement-custom", Input).value.strip()
        on = custom or str(self.query_one("#placement", Select).value)
        runtime = str(self.query_one("#runtime", Select).value)
        names = None if len(chosen) == len(self.recipe.variants) else chosen
        self._error("launching…")
        self._launch(self.recipe_path, names, on, runtime)

    @work(thread=True, exclusive=True, group="launch")
    def _launch(self, path: Path, variants: list[str] | None, on: str, runtime: str) -> None:
        try:
            submitted = self.workstation.launch(path, variants or (), on=on, runtime=runtime)
        except SeglabError as exc:  # placement, engine and recipe errors are shown inline
            log.info("launch of %s failed: %s", path, exc)
            self.app.call_from_thread(self._error, str(exc))
            return
        self.app.call_from_thread(self.dismiss, [s.record for s in submitted])
