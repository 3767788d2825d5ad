"""`python -m kit VERB`: the only place that parses arguments and prints.

A KitError is printed as one red line and exits 1; a traceback appears only with --debug.
Ctrl-C and SIGTERM end as one line too, with 130 and 143.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from kit.cli import remote_verbs
from kit.cli.console import (
    console,
    error_console,
    make_config,
    print_report,
    value,
)
from kit.cli.cv_verbs import cmd_compare, cmd_cv, cmd_devices, lookup_or_none, print_warning
from kit.config import PIPELINES, PRESETS
from kit.core.errors import KitError
from kit.kaggle import places
from kit.runs import files, folders
from kit.submit import ledger, validate
from kit.training import interrupts, runtime

# ---------------------------------------------------------------- verbs


# The verbs that read the competition's files (on Kaggle they are prepared first).
DATA_VERBS = ("data", "cv", "report", "submit", "augment-preview", "ensemble", "compare")


def cmd_download(args) -> None:
    from kit.data import download

    if args.archive is None:
        from kit.kaggle import client

        warning = client.kaggle_json_warning()
        if warning:
            error_console.print(f"[yellow]warning:[/] {warning}")
    with console.status("fetching, unpacking and validating the competition files"):
        result = download.download(args.data, args.archive, args.force)
    if result.unpacked:
        where = "Kaggle" if result.fetched else result.source
        console.print(f"[green]ready[/] {args.data}/ from {where}: "
                      f"{_counts_text(result.counts)}")
    else:
        console.print(f"[green]up to date[/] {args.data}/: {_counts_text(result.counts)} "
                      "(FORCE=1 to fetch again)")


def _counts_text(counts: dict) -> str:
    return (f"{counts['training_rows']} training rows, {counts['test_images']} test images, "
            f"{counts['lookup_rows']} lookup rows")


def cmd_data(args) -> None:
    import numpy as np

    from kit.core.keypoints import KEYPOINT_NAMES
    from kit.data import tables

    training = tables.load_training(args.data)
    test = tables.load_test(args.data)
    lookup = tables.load_lookup(args.data, test.image_ids)
    full = tables.subset_indices(training.keypoints, "15")
    core = tables.subset_indices(training.keypoints, "4")
    console.print(f"[bold]{args.data}/training.csv[/]: {len(training)} rows; "
                  f"15-key subset (all 30 values) {len(full)} rows; "
                  f"4-key subset (eye centres, nose tip, bottom lip) {len(core)} rows")
    patterns = Table(title="Missing-keypoint patterns", title_justify="left")
    patterns.add_column("rows", justify="right")
    patterns.add_column("keypoints missing")
    for missing, count in tables.missing_patterns(training.keypoints)[: args.patterns]:
        text = "none" if not missing else (
            f"all but the 4 core ({len(missing)})" if len(missing) == 11 else ", ".join(missing))
        patterns.add_row(str(count), text)
    console.print(patterns)
    stats = Table(title="Keypoints (pixels)", title_justify="left")
    for column in ("keypoint", "present", "mean x", "sd x", "mean y", "sd y"):
        stats.add_column(column, justify="left" if column == "keypoint" else "right")
    for k, name in enumerate(KEYPOINT_NAMES):
        x, y = training.keypoints[:, 2 * k], training.keypoints[:, 2 * k + 1]
        present = ~np.isnan(x)
        stats.add_row(name, str(int(present.sum())),
                      *(f"{f(v[present]):.2f}" for v in (x, y) for f in (np.mean, np.std)))
    console.print(stats)
    asked = np.unique(lookup.image_ids, return_counts=True)[1]
    values, images = np.unique(asked, return_counts=True)
    asked_text = ", ".join(f"{i} images asked {v} values" for v, i in
                           sorted(zip(values, images), key=lambda t: -t[0]))
    console.print(f"[bold]{args.data}/test.csv[/]: {len(test)} images; "
                  f"[bold]IdLookupTable.csv[/]: {len(lookup)} rows ({asked_text})")


def cmd_synth(args) -> None:
    from kit.data import synth

    summary = synth.make_competition(args.out, n_train=args.train, n_test=args.test,
                                     seed=args.seed)
    console.print(f"[green]wrote[/] {summary['archive']} and {summary['solution']}: "
                  f"{summary['n_train']} training rows ({summary['n_train_complete']} with all "
                  f"30 values), {summary['n_test']} test images, "
                  f"{summary['n_lookup_rows']} lookup rows")


def cmd_report(args) -> None:
    from kit.data import tables
    from kit.results import report

    run_dir = folders.resolve_run(args.runs, args.run)
    training = tables.load_training(args.data)
    result = report.write(run_dir, training, lookup_or_none(args.data))
    print_report(result)
    print_warning(result)


def cmd_ensemble(args) -> None:
    from kit.data import tables
    from kit.results import ensemble, report

    members = [folders.resolve_run(args.runs, name) for name in args.members]
    training = tables.load_training(args.data)
    lookup = lookup_or_none(args.data)
    with console.status(f"{args.method}ing the members' out-of-fold predictions"):
        run_dir = ensemble.make_ensemble(members, args.runs, training, method=args.method)
        result = report.write(run_dir, training, lookup)
    print_report(result)
    console.print(f"[green]ensemble[/] {run_dir} (now {args.runs / 'latest'}); report: "
                  f"{run_dir / 'report.md'}; `python -m kit submit {run_dir.name}` submits it")


def _load_report(runs: Path, name: str | None) -> dict:
    return files.read_report(folders.resolve_run(runs, name))


def cmd_show(args) -> None:
    print_report(_load_report(args.runs, args.run))


def cmd_augment_preview(args) -> None:
    import jax
    import numpy as np

    from kit.core.keypoints import COLUMNS, flip_permutation
    from kit.data import tables
    from kit.model import augment
    from kit.results import faces

    cfg = make_config(args).augment
    training = tables.load_training(args.data)
    rng = np.random.default_rng(args.seed)
    rows = rng.choice(len(training), size=min(args.images, len(training)), replace=False)
    images = training.images[rows].astype(np.float32) / 255.0
    keypoints = training.keypoints[rows]
    present = ~np.isnan(keypoints)
    filled = np.where(present, keypoints, 0.0).astype(np.float32)
    run = jax.jit(augment.augment, static_argnums=(4,))
    views, view_points = [], []
    for k in range(args.versions):
        key = jax.random.PRNGKey(args.seed * 1000 + k)
        out, points, mask = run(key, images, filled, present.astype(np.float32), cfg,
                                flip_permutation(COLUMNS))
        points = np.where(np.asarray(mask) > 0, np.asarray(points), np.nan)
        views.append(np.asarray(out))
        view_points.append(points)
    path = faces.augment_preview(images, keypoints, np.stack(views, 1), np.stack(view_points, 1),
                                 args.out)
    console.print(f"[green]wrote[/] {path}")


def cmd_submit(args) -> None:
    from kit.submit import submission

    run_dir = folders.resolve_run(args.runs, args.run)
    with console.status("predicting the test images with the run's fold ensembles"):
        result = submission.write_submission(run_dir, args.data, args.out)
    console.print(f"[green]wrote[/] {result.csv_path} ({result.rows} rows, validated) and "
                  f"{result.manifest_path.name}")
    in_notebook = places.publish_submission(result.csv_path)  # on Kaggle: working/submission.csv
    if in_notebook:
        console.print(f"[green]copied[/] to {in_notebook}, what this notebook submits")
    if args.solution:
        rmse = validate.score(result.csv_path, args.solution)
        console.print(f"[bold]score against {args.solution}: {rmse:.4f}[/] "
                      f"(CV {value(result.cv_rmse)}, LB estimate {value(result.lb_estimate)})")
    if args.dry_run:
        console.print("dry run: not uploaded")
        return
    if in_notebook and not places.can_upload():
        console.print("no Kaggle credentials in this notebook: not uploaded; submit "
                      f"{in_notebook} from the notebook's output")
        return
    message = args.message or f"{result.run_id} cv {value(result.cv_rmse)}"
    with console.status("uploading and waiting for Kaggle's score"):
        outcome = ledger.upload(result, message, ledger.ledger_path(args.out),
                                    timeout=args.timeout)
    public, private = outcome.get("public_score"), outcome.get("private_score")
    if outcome.get("status") == "COMPLETE":
        console.print(f"[green]scored[/] public {value(public)}"
                      + (f", private {value(private)}" if private is not None else "")
                      + f" | CV {value(result.cv_rmse)}, LB estimate "
                        f"{value(result.lb_estimate)}")
    else:
        console.print(f"submitted; status {outcome.get('status')}: "
                      "`make submissions REFRESH=1` reads the score later")


def cmd_score(args) -> None:

    console.print(f"{validate.score(args.submission, args.solution):.4f}")


def cmd_submissions(args) -> None:

    ledger_path = ledger.ledger_path(args.out)
    if args.refresh:
        with console.status("reading scores from Kaggle"):
            entries = ledger.refresh_ledger(ledger_path)
    else:
        entries = ledger.read_ledger(ledger_path)
    table = Table(title=f"{ledger_path}", title_justify="left")
    for column in ("time", "run", "CV RMSE", "LB estimate", "uploaded", "status", "public",
                   "private"):
        table.add_column(column, justify="left" if column in ("time", "run") else "right")
    for _, entry in entries.iterrows():
        table.add_row(*(str(entry[c]) if str(entry[c]) != "nan" else "–" for c in (
            "time", "run", "cv_rmse", "lb_estimate", "uploaded", "status", "public_score",
            "private_score")))
    console.print(table if len(entries) else f"{ledger_path}: no submissions yet")


# ---------------------------------------------------------------- parser


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m kit",
        description="Kaggle kit for Facial Keypoints Detection: download, cv, submit.",
    )
    top.add_argument("--debug", action="store_true", help="show tracebacks")
    top.add_argument("--data", type=Path, default=places.default_data_dir(),
                     help="competition data folder (default data/; on Kaggle, scratch space)")
    top.add_argument("--runs", type=Path, default=places.default_runs_dir(),
                     help="CV runs folder (default cv/; on Kaggle, /kaggle/working/cv)")
    verbs = top.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser("download", help="fetch the competition (Kaggle API or a local zip)")
    p.add_argument("--archive", type=Path, help="a local copy of facial-keypoints-detection.zip")
    p.add_argument("--force", action="store_true", help="fetch and unpack again")
    p.set_defaults(handler=cmd_download)

    p = verbs.add_parser("data", help="summary of the downloaded data")
    p.add_argument("--patterns", type=int, default=8, help="missing patterns to list")
    p.set_defaults(handler=cmd_data)

    p = verbs.add_parser("synth", help="write a small synthetic competition (zip + solution)")
    p.add_argument("out", type=Path)
    p.add_argument("--train", type=int, default=400)
    p.add_argument("--test", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_synth)

    def config_flags(p):
        p.add_argument("--preset", help=" | ".join(PRESETS) + " (default: gpu where there is "
                       "an accelerator, else default); for cv also a pipeline of several "
                       "runs: " + " | ".join(PIPELINES))
        p.add_argument("--folds", type=int)
        p.add_argument("--seed", type=int)
        p.add_argument("--epochs", type=int)
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override any config field, e.g. --set train.learning_rate=0.003")

    p = verbs.add_parser("cv", help="k-fold CV of both subsets' networks, report and pictures")
    config_flags(p)
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start afresh instead of continuing an unfinished run")
    p.add_argument("--allow-cpu", action="store_true",
                   help="train on the CPU even where an NVIDIA GPU is there that jax cannot use")
    remote_verbs.add_cv_flags(p)
    p.add_argument("--describe", action="store_true",
                   help="print every setting the run would train with, and stop")
    p.set_defaults(handler=cmd_cv)

    p = verbs.add_parser("report", help="rewrite a run's report and pictures")
    p.add_argument("run", nargs="?", help="run id or folder (default cv/latest)")
    p.set_defaults(handler=cmd_report)

    p = verbs.add_parser("show", help="print a run's report")
    p.add_argument("run", nargs="?", help="run id or folder (default cv/latest)")
    p.set_defaults(handler=cmd_show)

    p = verbs.add_parser("ensemble", help="blend finished runs per keypoint by their OOF "
                         "evidence into an ensemble run")
    p.add_argument("members", nargs="+", metavar="RUN",
                   help="finished runs (ids or folders) of the same data and folds: two or "
                        "more to blend, one or more to stack")
    p.add_argument("--runs", type=Path, default=argparse.SUPPRESS,
                   help="CV runs folder, where the ensemble run goes too (default cv/)")
    p.add_argument("--method", default="blend",
                   help="blend: per keypoint value, non-negative weights summing to 1 (the "
                        "default); stack: a ridge per value over every member's values, "
                        "which also corrects an offset every face shares")
    p.set_defaults(handler=cmd_ensemble)

    p = verbs.add_parser("compare", help="B - A of two runs' RMSEs on the OOF rows both "
                         "predicted, with a 95%% interval (paired bootstrap over face groups)")
    p.add_argument("run_a", metavar="RUN_A", help="run id or folder")
    p.add_argument("run_b", metavar="RUN_B", help="run id or folder")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    p.set_defaults(handler=cmd_compare)

    p = verbs.add_parser("augment-preview", help="PNG grid of augmented training faces")
    config_flags(p)
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--versions", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("augment-preview.png"))
    p.set_defaults(handler=cmd_augment_preview, seed=0)

    p = verbs.add_parser("submit", help="predict the test set, write, validate and upload")
    p.add_argument("run", nargs="?", help="run id or folder (default cv/latest)")
    p.add_argument("--message", help="submission description (default: run id and CV RMSE)")
    p.add_argument("--dry-run", action="store_true", help="write and validate, do not upload")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for the score")
    p.add_argument("--out", type=Path, default=places.default_submissions_dir())
    p.add_argument("--solution", type=Path,
                   help="score the file against this solution (practice or synthetic data)")
    p.set_defaults(handler=cmd_submit)

    p = verbs.add_parser("score", help="RMSE of a submission against a solution file")
    p.add_argument("submission", type=Path)
    p.add_argument("solution", type=Path)
    p.set_defaults(handler=cmd_score)

    p = verbs.add_parser("devices", help="what this machine trains on, and what `make cv` "
                         "would do here")
    p.set_defaults(handler=cmd_devices)

    p = verbs.add_parser("submissions", help="the ledger of submissions and scores")
    p.add_argument("--refresh", action="store_true", help="read pending scores from Kaggle")
    p.add_argument("--out", type=Path, default=places.default_submissions_dir())
    p.set_defaults(handler=cmd_submissions)

    remote_verbs.add_verbs(verbs)
    return top


def main(argv: list[str] | None = None) -> int:
    runtime.prepare_process()  # the `kit` command and a notebook's calls come in here
    args = parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `cv --remote` passes them on
    try:
        if (args.verb in DATA_VERBS and not getattr(args, "remote", None)
                and places.on_kaggle()):
            from kit.data import download  # parsing needs numpy: imported only where it runs

            prepared = download.prepare_notebook_data(args.data)  # from /kaggle/input
            if prepared:
                console.print(prepared)
        # SIGTERM (`timeout`, a scheduler, a Kaggle session's end) stops as Ctrl-C does.
        with interrupts.sigterm_as_interrupt():
            args.handler(args)
    except KitError as error:
        if args.debug:
            raise
        error_console.print(f"[red]error:[/] {escape(str(error))}")
        return 1
    except KeyboardInterrupt as stop:
        what = "terminated" if isinstance(stop, interrupts.Terminated) else "interrupted"
        error_console.print(f"[yellow]{what}[/]: `make cv` resumes from the last checkpoint")
        return interrupts.exit_status(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
