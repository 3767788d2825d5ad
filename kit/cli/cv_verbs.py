"""`python -m kit cv`: one CV run with its report, or a named pipeline of runs (`--preset
best`), or either on a Kaggle kernel (kit.cli.remote_verbs)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from rich.markup import escape

from kit.cli import remote_verbs
from kit.cli.console import console, error_console, make_config, pipeline_arguments, print_report
from kit.config import is_pipeline
from kit.core.errors import KitError
from kit.runs import files, folders
from kit.training import runtime


def cmd_cv(args) -> None:
    import dataclasses

    runtime.check_supported()  # a jax, dm-haiku or kaggle outside the kit's ranges: one line
    if getattr(args, "describe", False):
        return describe_cv(args)
    if args.remote:  # the same cv on a Kaggle kernel: kit/cli/remote_verbs.py
        return remote_verbs.cmd_cv_remote(args)
    from kit.training import hardware

    # Before anything trains: a GPU that jax left for the CPU, or cannot run on, is one line.
    found = hardware.check(args.allow_cpu)
    if is_pipeline(args.preset):
        return cmd_pipeline(args)
    cfg = make_config(args)  # checked before anything heavy is imported or read
    machine = hardware.survey(cfg, *found)
    if machine["problem"]:  # the CPU was asked for: said, not refused
        told = machine["problem"].removesuffix(hardware.ALLOW_CPU_HINT)
        error_console.print(f"[yellow]warning:[/] {escape(told)}; training on the CPU as asked")
    console.print(f"[bold]devices[/] {escape(hardware.summary(machine))}")

    from kit.cli.display import CVDisplay
    from kit.data import tables
    from kit.results import report, teacher
    from kit.runs import cv

    console.print(f"[bold]config[/] {escape(json.dumps(dataclasses.asdict(cfg)))}")
    training = tables.load_training(args.data)
    lookup = lookup_or_none(args.data)
    teaching = None
    if cfg.teacher:
        with console.status(f"preparing what run {cfg.teacher} teaches"):
            teaching = teacher.prepare_from(cfg, args.runs, training, args.data, lookup)
    started = time.perf_counter()
    with CVDisplay(console) as display:
        run_dir = cv.run_cv(cfg, training, args.runs, resume=args.resume, listener=display,
                            teaching=teaching)
    seconds = time.perf_counter() - started
    with console.status("writing the report and pictures"):
        result = report.write(run_dir, training, lookup, seconds)
    print_report(result)
    engine = result.get("engine")
    if engine:
        console.print(f"trained {engine['images']:,} images at {engine['images_per_second']:,.0f}"
                      f"/s on {engine['devices']} {engine['backend']} device(s); compiling "
                      f"took {engine['compile_seconds']:.1f} s")
    console.print(f"[green]run[/] {run_dir} ({seconds / 60:.1f} min); "
                  f"report: {run_dir / 'report.md'}")
    print_warning(result)


def cmd_pipeline(args) -> None:
    import jax

    from kit import config as config_io
    from kit.cli.display import PipelineDisplay
    from kit.data import tables
    from kit.recipes import pipeline as runner

    base, why = config_io.preset_for(jax.default_backend())
    recipe, arguments = pipeline_arguments(args, base)
    console.print(f"pipeline [bold]{recipe.name}[/], {len(recipe.stages)} stages, each CV stage "
                  f"on preset [bold]{base}[/] ({why}), with {' '.join(arguments.overrides) or 'no --set'}:")
    console.print(runner.describe(recipe))
    training = tables.load_training(args.data)
    lookup = lookup_or_none(args.data)
    started = time.perf_counter()
    final = runner.run(recipe, arguments, training, args.data, args.runs, lookup,
                       resume=args.resume, listener=PipelineDisplay(console))
    print_report(files.read_report(final))
    console.print(f"[green]pipeline[/] {recipe.name}: {final} "
                  f"({(time.perf_counter() - started) / 60:.1f} min this call); "
                  f"{args.runs / folders.LATEST} points to it, so `make submit` submits it; "
                  f"report: {final / 'report.md'}")
    print_warning(files.read_report(final))


def print_warning(result: dict) -> None:
    """The report's warning (a run worse than predicting each keypoint's mean), if any."""
    if result.get("warning"):
        error_console.print(f"[yellow]warning:[/] {escape(result['warning'])}")


def cmd_compare(args) -> None:
    from kit.data import tables
    from kit.results import compare

    run_a, run_b = (folders.resolve_run(args.runs, name) for name in (args.run_a, args.run_b))
    training = tables.load_training(args.data)
    lookup = lookup_or_none(args.data)
    with console.status("bootstrapping B - A over face groups"):
        result = compare.compare_runs(run_a, run_b, training, lookup, args.resamples,
                                      args.seed)
    print_comparison(result, compare.headline(result))


def print_comparison(result: dict, headline: str) -> None:
    from rich.table import Table

    from kit.cli.console import value

    a, b = result["runs"]
    console.print(f"A = [bold]{a}[/], B = [bold]{b}[/]")
    differences = result.get("config_differences", [])
    if differences:
        more = f" and {len(differences) - 8} more" if len(differences) > 8 else ""
        console.print("configs differ in " + "; ".join(differences[:8]) + more)
    boot = result["bootstrap"]
    console.print(
        f"on the {result['lines']:,} OOF values of {result['rows']:,} rows both runs predicted "
        f"(A has {result['lines_a']:,}, B {result['lines_b']:,}); {boot['method']}, "
        f"{boot['resamples']} resamples, seed {boot['seed']}; {result['groups']:,} face groups: "
        f"{result.get('groups_from', 'the runs')}")
    level = f"{boot['level']:.0%}"
    for title, kinds in (("RMSE in pixels; B - A below zero: B is better",
                          ("estimate", "overall", "subset")),
                         ("Per keypoint (OOF RMSE in pixels)", ("keypoint",))):
        table = Table(title=title, title_justify="left")
        for column in ("measure", "A", "B", "B - A", f"{level} interval", "verdict"):
            table.add_column(column, justify="left" if column in ("measure", "verdict")
                             else "right", no_wrap=column != "measure")
        for row in result["figures"]:
            if row["kind"] in kinds:
                table.add_row(row["measure"], value(row["a"]), value(row["b"]),
                              f"{row['difference']:+.4f}",
                              f"{row['low']:+.4f} to {row['high']:+.4f}", row["verdict"])
        console.print(table)
    if result.get("estimate_reason"):
        console.print(f"no leaderboard estimate: {result['estimate_reason']}")
    console.print(f"[bold]{escape(headline)}[/]")


def lookup_or_none(data_dir: Path):
    from kit.data import tables

    try:
        test = tables.load_test(data_dir)
        return tables.load_lookup(data_dir, test.image_ids)
    except KitError as error:
        error_console.print(f"[yellow]warning:[/] no leaderboard estimate: {error}")
        return None


def cmd_devices(args) -> None:
    from kit.training import hardware

    backend, said = hardware.start_backends()
    for line in hardware.describe(hardware.survey(None, backend, said)):
        console.print(escape(line))


def describe_cv(args) -> None:
    """`cv --describe`: every setting the run would train with, one `--set` line each (a
    pipeline's CV stages one after another); nothing is read or trained."""
    from kit import config as config_io

    if not is_pipeline(args.preset):
        print("\n".join(config_io.settings_lines(make_config(args))))
        return
    import jax

    from kit.recipes import pipeline as runner

    recipe, arguments = pipeline_arguments(args, config_io.preset_for(jax.default_backend())[0])
    for step in runner.plan(recipe, arguments):
        if step.config is not None:
            print(f"# pipeline {recipe.name}, stage {step.stage.name}")
            print("\n".join(config_io.settings_lines(step.config)))
