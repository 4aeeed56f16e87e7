"""The dashboard's stylesheet and the palette's words for its actions."""

from __future__ import annotations

APP_CSS = """
    .dialog { width: 80%; height: auto; max-height: 90%; padding: 1 2;
              border: thick $accent; background: $surface; }
    .wide-dialog { width: 95%; }
    ModalScreen { align: center middle; }
    .buttons { height: auto; align: right middle; }
    .buttons Button { margin-left: 2; }
    .row { height: auto; }
    .hint { color: $text-muted; }
    #hosts { height: auto; max-height: 50%; padding: 0 1; text-wrap: nowrap;
             text-overflow: ellipsis; }
    #runs { height: 1fr; min-height: 4; }
    #logpane { height: 1fr; }
    #log-status { height: 1; color: $text-muted; background: $boost; }
    #log { height: 1fr; }
    #log-search { height: 3; }
    #metrics { height: 1fr; min-height: 6; }
    #new-run-body { height: 14; }
    #recipes { width: 1fr; height: 100%; }
    #new-run-right { width: 1fr; height: 100%; }
    #variants { height: 1fr; }
    #placement { width: 1fr; }
    #placement-custom { width: 1fr; }
    #runtime { width: 16; }
    #new-run-error { height: auto; }
    #compare { height: auto; max-height: 90%; }
    #help, #new-run { padding: 0 1; }
    """

ACTION_HELP = {
    "new_run": "launch the variants of a recipe",
    "stop": "stop the selected or marked runs gracefully",
    "kill": "kill the selected or marked runs",
    "resume": "resume stopped or failed runs",
    "remove": "remove ended runs from the registry",
    "compare": "compare the variants of an ablation",
    "shell": "open a shell in the run's container",
    "follow": "toggle log follow mode",
    "events": "show or hide event lines in the log",
    "search": "search the log",
    "help": "show the key bindings",
}
