"""What every verb shares: the two consoles, the config a verb's flags make, a run's report
as tables, and durations as a clock."""
from __future__ import annotations

import contextlib
import importlib.util

import rich.console
from rich.table import Table


def can_redraw(is_terminal: bool, is_jupyter: bool, has_ipywidgets: bool) -> bool:
    """Whether live bars and spinners can redraw in place: in Jupyter only with ipywidgets
    installed, elsewhere only on a terminal."""
    return has_ipywidgets if is_jupyter else is_terminal


def ipywidgets_installed() -> bool:
    return importlib.util.find_spec("ipywidgets") is not None


def redraws(console: rich.console.Console) -> bool:
    """can_redraw() for this console (ipywidgets looked for only in Jupyter)."""
    return can_redraw(console.is_terminal, console.is_jupyter,
                      console.is_jupyter and ipywidgets_installed())


class Console(rich.console.Console):
    """rich's Console whose spinner, where nothing can redraw, is its text printed once:
    rich's own would warn at every refresh in a notebook without ipywidgets, and show nothing
    in a log."""

    def status(self, status, **spinner):
        if redraws(self):
            return super().status(status, **spinner)
        self.print(f"{status} ...")
        return contextlib.nullcontext()


# soft_wrap: a long line stays one line (a log or a test reads it whole).
console = Console(highlight=False, soft_wrap=True)
error_console = rich.console.Console(stderr=True, highlight=False, soft_wrap=True)


def make_config(args):
    from kit import config as config_io

    name = args.preset
    if name is None:  # a preset for the hardware; an explicit one always wins
        import jax

        name, why = config_io.preset_for(jax.default_backend())
        console.print(f"preset [bold]{name}[/] ({why}; --preset or PRESET= chooses another)")
    return config_io.override(config_io.preset(name), config_overrides(args))


def pipeline_arguments(args, base: str):
    """The pipeline and what it is asked, checked stage by stage before anything is read."""
    from kit import config as config_io
    from kit.recipes import pipeline as runner

    recipe = config_io.pipeline(args.preset)
    arguments = runner.Arguments(base, tuple(config_overrides(args)))
    runner.plan(recipe, arguments)
    return recipe, arguments


def config_overrides(args) -> list[str]:
    """The `--set`s, then --folds, --seed and --epochs as the settings they stand for."""
    overrides = list(args.set or [])
    for flag, key in (("folds", "folds"), ("seed", "seed"), ("epochs", "train.epochs")):
        value = getattr(args, flag, None)
        if value not in (None, ""):
            overrides.append(f"{key}={value}")
    return overrides


def clock(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour on."""
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else \
        f"{minutes}:{secs:02d}"


def value(number) -> str:
    return "–" if number is None else f"{number:.4f}"


def print_report(result: dict) -> None:
    from kit.core.keypoints import KEYPOINT_NAMES

    summary = Table(title=f"CV run {result['run']}", title_justify="left")
    summary.add_column("measure")
    summary.add_column("RMSE (px)", justify="right")
    summary.add_row("OOF, all values", value(result["overall_rmse"]))
    for subset, entry in result["subsets"].items():
        summary.add_row(f"OOF, {subset}-key model ({entry['rows']} rows)", value(entry["rmse"]))
        summary.add_row("  per fold, mean ± spread",
                        f"{entry['fold_mean']:.4f} ± {entry['fold_std']:.4f}")
    estimate = result["leaderboard_estimate"]
    interval = estimate.get("interval") or {}
    summary.add_row("[bold]leaderboard estimate[/]" + (" [95 % interval]" if "low" in interval
                                                        else ""),
                    f"[bold]{value(estimate.get('rmse'))}[/]" + (
                        f" [{interval['low']:.4f}, {interval['high']:.4f}]" if "low" in interval
                        else ""))
    console.print(summary)
    folds = Table(title="Per fold", title_justify="left")
    folds.add_column("subset")
    fold_ids = sorted({int(f) for e in result["subsets"].values() for f in e["per_fold"]})
    for fold in fold_ids:
        folds.add_column(f"fold {fold}", justify="right")
    for subset, entry in result["subsets"].items():
        per_fold = {int(k): v for k, v in entry["per_fold"].items()}
        folds.add_row(subset, *(value(per_fold.get(f)) for f in fold_ids))
    console.print(folds)
    keypoints = Table(title="Per keypoint", title_justify="left")
    keypoints.add_column("keypoint")
    subsets = list(result["subsets"])
    for subset in subsets:
        keypoints.add_column(f"{subset}-key", justify="right")
    for name in KEYPOINT_NAMES:
        keypoints.add_row(name, *(value(result["subsets"][s]["per_keypoint"].get(name))
                                  for s in subsets))
    console.print(keypoints)
    if "members" in result:
        print_members(result["members"])
    if "pipeline" in result:
        print_stages(result["pipeline"])


def print_members(rows: list[dict]) -> None:
    """An ensemble's members beside it: each one's OOF, estimate and mean blend weight."""
    table = Table(title="Members and the ensemble (bold): OOF RMSE per subset, leaderboard "
                  "estimate, mean blend weight per subset", title_justify="left")
    table.add_column("run", no_wrap=True)
    for column in ("15-key", "4-key", "LB est.", "w 15", "w 4"):
        table.add_column(column, justify="right")
    for row in rows:
        weight = row.get("mean_weight", {})
        cells = [row["run"], value(row["subsets"].get("15")), value(row["subsets"].get("4")),
                 value(row["leaderboard_estimate"]), value(weight.get("15")),
                 value(weight.get("4"))]
        table.add_row(*(f"[bold]{c}[/]" if row["role"] == "ensemble" else c for c in cells))
    console.print(table)


def print_stages(rows: list[dict]) -> None:
    """A pipeline's stages: each one's run, OOF, estimate and time."""
    table = Table(title="Pipeline stages: OOF RMSE per subset, leaderboard estimate, minutes",
                  title_justify="left")
    for column in ("stage", "run", "15-key", "4-key", "LB est.", "min"):
        table.add_column(column, justify="left" if column in ("stage", "run") else "right",
                         no_wrap=column == "run")
    for row in rows:
        minutes = "–" if row.get("seconds") is None else f"{row['seconds'] / 60:.1f}"
        table.add_row(row["role"], row["run"], value(row["subsets"].get("15")),
                      value(row["subsets"].get("4")), value(row["leaderboard_estimate"]),
                      minutes)
    console.print(table)
