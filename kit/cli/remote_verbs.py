"""The CLI of remote runs: `cv --remote kaggle`, `remote attach [RUN]`, `remote list`.

Part of the CLI (it parses and prints); kit/cli/main.py adds these flags and verbs and hands
`cv --remote` over here. The logic is in kit/remote/kernels.py.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kit.cli.console import clock
from kit.core.errors import KitError
from kit.remote import code, kernels

HEARTBEAT_SECONDS = 300  # without a terminal, a line this often while nothing changes
_START_AND_SAVE_MINUTES = (kernels.NEW_SCRIPT_LIMIT_S + kernels.QUEUED_LIMIT_S
                           + kernels.SAVE_MARGIN_S) // 60


def add_cv_flags(p) -> None:
    """The flags that steer a remote run (and are not passed on to the kernel's cv)."""
    group = p.add_argument_group("run on Kaggle's machines")
    group.add_argument("--remote", choices=["kaggle"],
                       help="push the run to a private Kaggle kernel with a GPU and wait")
    group.add_argument("--public", action="store_true", help="make the kernel public")
    group.add_argument("--accelerator", default=kernels.DEFAULT_ACCELERATOR,
                       help=f"Kaggle machine shape (default {kernels.DEFAULT_ACCELERATOR}; "
                            "none: CPU only)")
    group.add_argument("--no-internet", dest="internet", action="store_false",
                       help="kernel without internet (then nothing can be installed there)")
    group.add_argument("--timeout", type=int, metavar="SECONDS",
                       help="Kaggle stops the kernel after this long (default: Kaggle's "
                            f"{kernels.KAGGLE_SESSION_LIMIT_S // 3600} hours); waiting ends at "
                            f"most {_START_AND_SAVE_MINUTES} minutes after that")
    add_wait_flags(group)


def add_wait_flags(p) -> None:
    p.add_argument("--poll", type=float, default=30.0, metavar="SECONDS",
                   help="seconds between status checks (default 30)")
    p.add_argument("--no-wait", dest="wait", action="store_false",
                   help="push and return; `python -m kit remote attach` waits later")


def add_verbs(verbs) -> None:
    p = verbs.add_parser("remote", help="runs on Kaggle's machines: attach, list")
    actions = p.add_subparsers(dest="remote_verb", metavar="ACTION", required=True)
    attach = actions.add_parser("attach", help="wait for a remote run, then download it")
    attach.add_argument("run", nargs="?", help="remote id, kernel or run (default: the newest "
                                               "not downloaded)")
    attach.add_argument("--poll", type=float, default=30.0, metavar="SECONDS",
                        help="seconds between status checks (default 30)")
    attach.set_defaults(handler=cmd_attach)
    listing = actions.add_parser("list", help="remote runs and their states")
    listing.set_defaults(handler=cmd_list)


def _console():
    from kit.cli.console import console

    return console


def _error_console():
    from kit.cli.console import error_console

    return error_console


# ---------------------------------------------------------------- verbs


def cmd_cv_remote(args) -> None:
    import dataclasses

    from kit.cli.console import make_config, pipeline_arguments
    from kit.config import is_pipeline

    console = _console()
    options = kernels.KernelOptions(public=args.public, accelerator=args.accelerator,
                                   internet=args.internet, timeout=args.timeout)
    flags = code.cv_flags(args.argv, add_cv_flags)
    if args.preset is None:  # the preset for the kernel's hardware, not this machine's
        args.preset = "gpu" if options.gpu else "default"
        flags += ["--preset", args.preset]
    # A bad flag stops here, before anything is pushed.
    if is_pipeline(args.preset):  # the kernel runs every stage on the kernel's hardware
        recipe, arguments = pipeline_arguments(args, "gpu" if options.gpu else "default")
        name = recipe.name
        console.print(f"[bold]pipeline[/] {name} on preset {arguments.base}, with "
                      f"{' '.join(arguments.overrides) or 'no --set'}")
    else:
        config = make_config(args)
        name = config.preset
        console.print(f"[bold]config[/] {escape(json.dumps(dataclasses.asdict(config)))}")
    with console.status("bundling the kit's code and pushing the kernel"):
        entry = kernels.push(args.runs, flags, name, options,
                             on_quota=lambda quota: console.print(quota.describe()))
    for warning in entry["warnings"]:  # the client's, e.g. a retired accelerator swapped
        _error_console().print(f"[yellow]warning:[/] kaggle: {escape(warning)}")
    where = "public" if options.public else "private"
    machine = options.accelerator if options.gpu else "CPU"
    console.print(f"[green]pushed[/] {entry['kernel']} version {entry['version']} ({where}, "
                  f"{machine}; {entry['source']}): {entry['url']}")
    if not args.wait:
        console.print(f"not waiting: `python -m kit remote attach {entry['id']}` waits and "
                      "downloads the run")
        return
    _wait_and_fetch(args.runs, entry, args.poll)


def cmd_attach(args) -> None:
    entry = kernels.find_entry(args.runs, args.run)
    if entry.get("run") and (Path(args.runs) / entry["run"]).is_dir():
        _console().print(f"{entry['id']}: already downloaded to {Path(args.runs) / entry['run']}")
        return
    _wait_and_fetch(args.runs, entry, args.poll)


def cmd_list(args) -> None:
    console = _console()
    entries = kernels.load_entries(args.runs)
    if not entries:
        console.print(f"{kernels.registry_dir(args.runs)}: no remote runs yet")
        return
    try:
        kernels.refresh(args.runs, entries)
    except KitError as error:
        _error_console().print(f"[yellow]warning:[/] states as last seen: {escape(str(error))}")
    owner = entries[0]["kernel"].split("/")[0]
    table = Table(title=f"Remote runs (kernels kaggle.com/code/{owner}/{kernels.KERNEL_PREFIX}<id>)",
                  title_justify="left")
    for column in ("id (pushed, UTC)", "status", "took", "run"):
        table.add_column(column, no_wrap=True)
    for entry in entries:
        status = entry.get("status", "?")
        if status == "COMPLETE" and not entry.get("run"):
            status = "COMPLETE, not downloaded"
        table.add_row(entry["id"], status, _took(entry), entry.get("run") or "–")
    console.print(table)


def _took(entry: dict) -> str:
    start = kernels._epoch(entry.get("pushed"))
    end = kernels._epoch(entry.get("finished")) or (None if entry.get("status") not in
                                                   kernels.WAITING else time.time())
    return clock(end - start) if start and end else "–"


# ---------------------------------------------------------------- waiting


class _Watch:
    """Shows each poll: live (status, elapsed, the log's last lines) in a terminal or Jupyter;
    elsewhere (a log, CI) a line per change of status and a heartbeat now and then."""

    def __init__(self, console, entry: dict):
        self.console = console
        self.kernel = entry["kernel"]
        live = console.is_terminal or console.is_jupyter
        self.live = Live(console=console, transient=True) if live else None
        self.last_status = None
        self.last_line_at = 0.0

    def __enter__(self):
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc_info):
        if self.live is not None:
            self.live.__exit__(*exc_info)

    def __call__(self, update: kernels.Update) -> None:
        headline = f"{self.kernel}: {update.status}, {clock(update.elapsed)} since the push"
        if self.live is not None:
            tail = Text("\n".join(f"  {line}" for line in update.log_tail[-3:]), style="dim")
            self.live.update(Group(Text(headline, style="bold"), tail))
            if update.status != self.last_status:
                self.console.print(escape(headline))
        elif (update.status != self.last_status
              or update.elapsed - self.last_line_at >= HEARTBEAT_SECONDS):
            last = f" | {update.log_tail[-1]}" if update.log_tail else ""
            self.console.print(escape(headline + last))
            self.last_line_at = update.elapsed
        self.last_status = update.status


def _wait_and_fetch(runs: Path, entry: dict, poll: float) -> None:
    from kit.cli.console import print_report

    console = _console()
    console.print(f"waiting for {entry['kernel']}; Ctrl-C stops waiting, not the kernel")
    try:
        with _Watch(console, entry) as watch:
            status, message, lines = kernels.wait(runs, entry, poll=poll, on_update=watch)
    except KeyboardInterrupt:
        console.print(f"[yellow]stopped waiting[/]; the kernel keeps running on Kaggle: "
                      f"`python -m kit remote attach {entry['id']}` waits and downloads it")
        raise SystemExit(130) from None
    except KitError as error:
        raise KitError(f"{error} (the kernel is not stopped: `python -m kit remote attach "
                       f"{entry['id']}` waits again)") from error
    if status != "COMPLETE":
        raise kernels.failure(entry, status, message, lines,
                             kernels.save_log(runs, entry, lines))
    with console.status("downloading the run"):
        run_dir = kernels.fetch(runs, entry)
    report = run_dir / "report.json"
    if report.is_file():
        print_report(json.loads(report.read_text()))
    took = _took(entry)
    console.print(f"[green]run[/] {run_dir} from {entry['kernel']} ({took} from the push); "
                  f"report: {run_dir / 'report.md'}; `make submit` uses it (cv/latest)")
