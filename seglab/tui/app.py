"""The seglab dashboard: hosts & GPUs, runs, the selected run's log and metrics.

A view over :class:`seglab.workstation.Workstation`: every action goes through the façade.
Telemetry is read in the event loop (its sources are asyncio-native); everything that
blocks (registry reads, runtime inspection, launches, log following) runs in threads, and
each poll is scheduled only after the previous one has finished.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from textual import events, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Container, Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Header, Input

from seglab.errors import ConfigurationError, SeglabError
from seglab.kinds import RuntimeKind
from seglab.registry import RunStatus
from seglab.telemetry.sample import HostStatus
from seglab.tui.feeds import EarlyStart, LiveFeed, StatesFeed
from seglab.tui.footer import KeyFooter
from seglab.tui.hosts_panel import HostsPanel, render_hosts
from seglab.tui.layouts import LayoutError, resolve_layout
from seglab.tui.log_pane import LogPane, text_lines
from seglab.tui.metrics_chart import MetricsChart
from seglab.tui.new_run import NewRunScreen
from seglab.tui.runs_table import RunsTable
from seglab.tui.screens import CompareScreen, ConfirmScreen, HelpScreen
from seglab.tui.styles import ACTION_HELP, APP_CSS

if TYPE_CHECKING:  # imported in a worker: the first frame does not wait for the domain
    from seglab.hosts import Inventory
    from seglab.registry import RunRecord
    from seglab.telemetry.sample import HostState
    from seglab.views import RunRow, Snapshot
    from seglab.workstation import Workstation

log = logging.getLogger(__name__)

NO_HOSTS_HINT = "no hosts.yaml yet: this machine only · `seglab hosts --help` adds servers"
LOG_TAIL = 500


class Forward(Protocol):
    """A TensorBoard or JupyterLab forward the dashboard opened (closed when it quits)."""

    url: str

    def close(self) -> None:
        """Stop the forward."""


class SeglabApp(App[int]):
    """The dashboard."""

    TITLE = "seglab"
    DEFAULT_CSS = APP_CSS
    SUB_TITLE = "hosts · runs · logs · metrics"
    BINDINGS = [
        Binding("n", "new_run", "new run"),
        Binding("s", "stop", "stop"),
        Binding("k", "kill", "kill"),
        Binding("r", "resume", "resume"),
        Binding("x", "remove", "remove"),
        Binding("c", "compare", "compare"),
        Binding("p", "preview", "preview", show=False),
        Binding("i", "class_iou", "per-class IoU", show=False),
        Binding("e", "shell", "shell"),
        Binding("j", "notebook", "notebook", show=False),
        Binding("t", "tensorboard", "tensorboard", show=False),
        Binding("f", "follow", "follow"),
        Binding("v", "events", "events", show=False),
        Binding("slash", "search", "search"),
        Binding("question_mark", "help", "help"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(
        self,
        workstation: Workstation | None = None,
        *,
        layout: str | Path = "default",
        feed: StatesFeed | None = None,
        clock: Callable[[], float] = time.time,
        poll_s: float = 1.0,
        recipe_folder: Path | None = None,
        follow_logs: bool = True,
        early: EarlyStart | None = None,
    ) -> None:
        css = layout if isinstance(layout, Path) else resolve_layout(layout)
        super().__init__(css_path=css)
        self._workstation = workstation
        self._early = early
        self._workstation_lock = threading.Lock()
        self._forwards: list[Forward] = []
        self.feed = feed
        self.clock = clock
        self.poll_s = poll_s
        self.recipe_folder = recipe_folder
        self.follow_logs = follow_logs
        self.hint: str | None = None
        self.last_error: str | None = None
        self.engines: dict[str, str] = {}
        self._data_error: str | None = None
        self._polling = False
        self._poll_again = False
        self._poll_timer: Timer | None = None
        self._followed: tuple[str | None, bool] = (None, False)

    @property
    def workstation(self) -> Workstation:
        """The façade (created on first use, in a worker thread)."""
        with self._workstation_lock:
            if self._workstation is None and self._early is not None:
                self._workstation = self._early.workstation()
            if self._workstation is None:
                from seglab.workstation import Workstation

                self._workstation = Workstation()
            return self._workstation

    # -- layout ----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        """Header, hosts, runs, log and metrics, footer."""
        yield Header(show_clock=False, icon="▦")
        with Container(id="body"):
            with Vertical(id="top"):
                yield HostsPanel(id="hosts")
                yield RunsTable(id="runs")
            with Horizontal(id="bottom"):
                yield LogPane(id="logpane")
                yield MetricsChart(id="metrics")
        yield KeyFooter()

    def on_mount(self) -> None:
        """Start the feeds: telemetry in the loop, runs in a thread."""
        self.query_one("#runs", RunsTable).focus()
        self._start_feed()
        self._poll_runs()

    # -- telemetry -------------------------------------------------------------------

    @work(group="feed")
    async def _start_feed(self) -> None:
        if self.feed is None:
            try:
                inventory = await asyncio.to_thread(self._inventory)
            except ConfigurationError as exc:
                self.hint = f"hosts.yaml has errors, showing nothing until fixed:\n{exc}"
                self._tick_telemetry()
                return
            if not inventory.path.exists():
                self.hint = NO_HOSTS_HINT
            self.feed = await asyncio.to_thread(LiveFeed, self.workstation)
        await self.feed.start()
        self._tick_telemetry()

    def _inventory(self) -> Inventory:
        return self.workstation.inventory()

    def _tick_telemetry(self) -> None:
        """Redraw the hosts panel from the latest states, then schedule the next tick (in
        0.1 s while a host still waits for its first reading, so it shows at once)."""
        if not self.screen_stack or not self.query("#hosts"):
            return  # quitting: the dashboard is gone
        waiting = self._redraw_hosts()
        self.set_timer(0.1 if waiting else 1.0, self._tick_telemetry)

    def _redraw_hosts(self) -> bool:
        """Redraw the hosts panel; whether a host still waits for its first reading."""
        feed = self.feed
        states = feed.states() if feed is not None else []
        links = feed.links() if feed is not None else {}
        history = feed.history if feed is not None else None
        self.query_one("#hosts", HostsPanel).show(
            render_hosts(states, history, links, self.hint, self.engines, data=self._data_rows())
        )
        return any(state.status is HostStatus.STARTING for state in states)

    def _data_rows(self) -> dict[str, str]:
        """Each host's datasets from the last `seglab data ls` (none before the workstation
        exists); a damaged record of the checks is said once, not at every tick."""
        workstation = self._workstation
        if workstation is None:
            return {}
        try:
            return workstation.data_rows()
        except SeglabError as exc:
            if str(exc) != self._data_error:
                self._data_error = str(exc)
                self.notify(str(exc), severity="warning", timeout=8)
            return {}

    # -- runs ------------------------------------------------------------------------

    def _poll_runs(self) -> None:
        if self._polling:
            self._poll_again = True
            return
        if self._poll_timer is not None:
            self._poll_timer.stop()
            self._poll_timer = None
        self._polling = True
        self._fetch_runs(self.query_one("#runs", RunsTable).current)

    @work(thread=True, group="runs")
    def _fetch_runs(self, selected: str | None) -> None:
        from seglab.views import Snapshot

        try:
            snapshot = self.workstation.poll(selected)
        except SeglabError as exc:  # a lost engine or host is shown, polling goes on
            log.warning("runs poll failed: %s", exc)
            snapshot = Snapshot(rows=[], error=f"runs: {exc}")
        self.call_from_thread(self._apply_runs, snapshot)

    def _apply_runs(self, snapshot: Snapshot) -> None:
        """Show a poll's result (one batch), then schedule the next poll."""
        self._polling = False
        if not self.screen_stack or not self.query("#runs"):
            return  # quitting: the dashboard is gone
        table = self.query_one("#runs", RunsTable)
        if snapshot.engines and snapshot.engines != self.engines:
            self.engines.update(snapshot.engines)
            self._redraw_hosts()
        if snapshot.error is None:
            table.show_rows(snapshot.rows)
            self.query_one("#metrics", MetricsChart).show(snapshot.curves, table.current)
            self._follow_selected()
        if snapshot.error != self.last_error:
            self.last_error = snapshot.error
            if snapshot.error:
                self.notify(snapshot.error, severity="error", timeout=8)
        self.sub_title = self._summary(snapshot.rows)
        if self._poll_again:
            self._poll_again = False
            self._poll_runs()
        else:
            self._poll_timer = self.set_timer(self.poll_s, self._poll_runs)

    def _summary(self, rows: list[RunRow]) -> str:
        active = sum(r.status in (RunStatus.RUNNING, RunStatus.STARTING) for r in rows)
        queued = sum(r.status == RunStatus.QUEUED for r in rows)
        return f"{len(rows)} runs · {active} active · {queued} queued"

    def _follow_selected(self) -> None:
        """Point the log pane at the selected run (again once a queued run has started)."""
        table = self.query_one("#runs", RunsTable)
        run_id = table.current
        row = table.rows_by_id.get(run_id or "")
        followed = (run_id, row is not None and row.has_log)
        if followed == self._followed:
            return
        self._followed = followed
        pane = self.query_one("#logpane", LogPane)
        if run_id is None or not self.follow_logs:
            pane.follow_run(run_id, None)
            return
        ws = self.workstation
        pane.follow_run(run_id, lambda: text_lines(ws.logs(run_id, follow=True, tail=LOG_TAIL)))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """A new selection: its log now, its curves at the next poll (brought forward)."""
        if event.data_table.id != "runs":
            return
        self._follow_selected()
        self._poll_runs()

    # -- actions ---------------------------------------------------------------------

    def _chosen(self) -> list[str]:
        chosen = self.query_one("#runs", RunsTable).chosen()
        if not chosen:
            self.notify("no run selected", severity="warning")
        return chosen

    def _row(self, run_id: str) -> RunRow:
        return self.query_one("#runs", RunsTable).rows_by_id[run_id]

    def action_new_run(self) -> None:
        """Open the new-run dialog."""
        states = self.feed.states() if self.feed is not None else []
        self._open_new_run(states)

    @work(thread=True, group="placements")
    def _open_new_run(self, states: list[HostState]) -> None:
        try:
            choices = self.workstation.placement_choices(states)
        except SeglabError as exc:  # registry or hosts.yaml trouble: fall back to auto
            log.warning("placement choices unavailable: %s", exc)
            choices = [("auto", "auto: free GPUs on any host")]
        self.call_from_thread(
            self.push_screen,
            NewRunScreen(self.workstation, choices, self.recipe_folder),
            self._launched,
        )

    def _launched(self, records: list[RunRecord] | None) -> None:
        if not records:
            return
        self.notify(
            f"started {len(records)} run(s): "
            + ", ".join(f"{r.run_id} ({r.status})" for r in records)
        )
        table = self.query_one("#runs", RunsTable)
        ws = self.workstation
        table.show_rows([*table.rows_by_id.values(), *(ws.run_row(r) for r in records)])
        self._poll_runs()

    def _confirm_then(
        self, verb: str, ids: list[str], detail: str, act: Callable[[str], object]
    ) -> None:
        question = f"{verb.capitalize()} {len(ids)} run(s)?\n\n" + "\n".join(ids) + f"\n\n{detail}"

        def answered(yes: bool | None) -> None:
            if yes:
                self._act(verb, ids, act)

        self.push_screen(ConfirmScreen(question), answered)

    @work(thread=True, group="actions")
    def _act(self, verb: str, ids: Iterable[str], act: Callable[[str], object]) -> None:
        for run_id in ids:
            try:
                result = act(run_id)
            except SeglabError as exc:  # shown to the user per run; the others go on
                log.info("%s %s failed: %s", verb, run_id, exc)
                self.call_from_thread(
                    self.notify, f"{verb} {run_id}: {exc}", severity="error", timeout=8
                )
                continue
            status = getattr(result, "status", None)
            self.call_from_thread(
                self.notify,
                f"{verb} {run_id}" + (f": {status}" if status is not None else ": done"),
            )
        self.call_from_thread(self._poll_runs)

    def action_stop(self) -> None:
        """Stop the chosen runs gracefully (after confirming)."""
        ids = self._chosen()
        if ids:
            ws = self.workstation
            self._confirm_then(
                "stop",
                ids,
                "SIGTERM: checkpoint, exit 0; resume later with r.",
                lambda r: ws.stop(r, timeout=60.0),
            )

    def action_kill(self) -> None:
        """Kill the chosen runs (after confirming)."""
        ids = self._chosen()
        if ids:
            self._confirm_then(
                "kill",
                ids,
                "SIGKILL: work since the last checkpoint is lost.",
                self.workstation.kill,
            )

    def action_resume(self) -> None:
        """Resume the chosen runs from their last checkpoint."""
        ids = self._chosen()
        if ids:
            self._act("resume", ids, self.workstation.resume)

    def action_remove(self) -> None:
        """Remove the chosen ended runs (after confirming; run dirs stay)."""
        ids = self._chosen()
        if ids:
            self._confirm_then(
                "remove", ids, "Their run directories stay on disk.", self.workstation.remove
            )

    def action_compare(self) -> None:
        """Compare the variants of the selected run's recipe (or the marked runs)."""
        table = self.query_one("#runs", RunsTable)
        if table.marked:
            ids = table.chosen()
        else:
            current = table.current
            if current is None:
                self.notify("no run selected", severity="warning")
                return
            recipe = self._row(current).recipe
            ids = [i for i, row in table.rows_by_id.items() if row.recipe == recipe]
        self._compare(ids)

    @work(thread=True, group="compare")
    def _compare(self, ids: list[str]) -> None:
        try:
            rows = self.workstation.comparison(ids, now=self.clock())
            names = self.workstation.class_names(ids[0])
        except SeglabError as exc:  # e.g. a run removed meanwhile
            log.info("comparison failed: %s", exc)
            self.call_from_thread(self.notify, f"compare: {exc}", severity="error")
            return
        first = self.query_one("#runs", RunsTable).rows_by_id.get(ids[0])
        title = f"{first.recipe if first else 'runs'}: {len(rows)} variant(s)"
        self.call_from_thread(self.push_screen, CompareScreen(title, rows, names))

    def action_preview(self) -> None:
        """Prediction samples of the selected run (the marked runs side by side)."""
        from seglab.tui.preview import PreviewScreen, chosen_runs  # images: not at start

        runs, variants = chosen_runs(self.query_one("#runs", RunsTable))
        if runs:
            self.push_screen(PreviewScreen(self.workstation, runs, variants))

    def action_class_iou(self) -> None:
        """Per-class IoU of the marked runs, else of the selected run's recipe's variants."""
        from seglab.tui.class_iou import ClassIouScreen
        from seglab.tui.preview import chosen_runs

        runs, variants = chosen_runs(self.query_one("#runs", RunsTable))
        ids = [run_id for run_id, _ in (runs if len(runs) > 1 else variants)]
        if ids:
            self.push_screen(ClassIouScreen(self.workstation, ids, self.clock()))

    def action_shell(self) -> None:
        """A shell in the selected run's container (the dashboard is suspended meanwhile)."""
        ids = self._chosen()
        if not ids:
            return
        row = self._row(ids[0])
        if row.runtime != RuntimeKind.DOCKER:
            self.notify(
                f"{ids[0]} runs as a {row.runtime} (no container to enter); "
                f"its files are in {row.run_dir}",
                severity="warning",
                timeout=8,
            )
            return
        if row.status != RunStatus.RUNNING:
            self.notify(
                f"a shell needs a running container ({ids[0]} is {row.status} on {row.host})",
                severity="warning",
            )
            return
        self._open_shell(ids[0])

    @work(thread=True, group="shell")
    def _open_shell(self, run_id: str) -> None:
        """The façade's shell command (a remote host's engine through its SSH link)."""
        try:
            argv, env = self.workstation.shell_command(run_id)
        except SeglabError as exc:
            self.call_from_thread(self.notify, f"shell: {exc}", severity="error", timeout=8)
            return
        self.call_from_thread(self._run_shell, argv, env)

    def _run_shell(self, argv: list[str], env: dict[str, str]) -> None:
        with self.suspend():
            subprocess.run(argv, env=env, check=False)

    def action_notebook(self) -> None:
        """JupyterLab (the `full` image, or a local process without Docker) on the selected
        run's host, forwarded here."""
        ids = self._chosen()
        host = self._row(ids[0]).host if ids else "local"
        self.notify(f"starting JupyterLab on {host}…", timeout=4)
        self._open_forward("notebook", f"{host}:cpu")

    def action_tensorboard(self) -> None:
        """TensorBoard over the selected run's dir, on its host, forwarded here."""
        ids = self._chosen()
        if not ids:
            self.notify("select a run first", severity="warning")
            return
        self.notify(f"starting TensorBoard for {ids[0]}…", timeout=4)
        self._open_forward("tensorboard", ids[0])

    @work(thread=True, group="forwards")
    def _open_forward(self, kind: str, target: str) -> None:
        """Start a forward through the façade; it is closed when the dashboard quits."""
        try:
            if kind == "tensorboard":
                forward = self.workstation.tensorboard(target)
            else:
                forward = self.workstation.notebook(target)
        except SeglabError as exc:  # engine, image and host errors are shown, not raised
            self.call_from_thread(self.notify, f"{kind}: {exc}", severity="error", timeout=10)
            return
        self._forwards.append(forward)
        self.call_from_thread(
            self.notify, f"{kind}: {forward.url}  (closes when you quit)", timeout=30
        )

    def action_follow(self) -> None:
        """Log follow mode on/off."""
        self.query_one("#logpane", LogPane).toggle_follow()

    def action_events(self) -> None:
        """Show or hide event lines in the log."""
        self.query_one("#logpane", LogPane).toggle_events()

    def action_search(self) -> None:
        """Search the log."""
        self.query_one("#logpane", LogPane).open_search()

    def on_key(self, event: events.Key) -> None:
        """Escape in the log search box closes it."""
        focused = self.focused
        if event.key == "escape" and isinstance(focused, Input) and focused.id == "log-search":
            self.query_one("#logpane", LogPane).close_search()
            self.query_one("#runs", RunsTable).focus()
            event.stop()

    def action_help(self) -> None:
        """Show the key bindings."""
        self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        """Leave the dashboard; runs keep going (TensorBoard/Jupyter forwards close)."""
        self.query_one("#logpane", LogPane).follow_run(None, None)
        if self.feed is not None:
            await self.feed.close()
        for forward in self._forwards:
            await asyncio.to_thread(forward.close)
        self.exit(0)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The dashboard's actions in the command palette."""
        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            if isinstance(binding, Binding) and binding.action != "quit":
                action = binding.action
                yield SystemCommand(
                    f"{binding.description} ({self.get_key_display(binding)})",
                    ACTION_HELP.get(action, binding.description),
                    lambda action=action: self.run_action(action),
                )


def run(layout: str, early: EarlyStart | None = None) -> int:
    """Open the dashboard with ``layout`` (``early``: the workstation begun before this
    module was imported); the exit status of `seglab`."""
    try:
        app = SeglabApp(layout=layout, early=early)
    except LayoutError as exc:
        print(f"seglab: {exc}", file=sys.stderr)
        return 2
    result = app.run()
    return int(result or 0)
