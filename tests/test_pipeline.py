"""`make cv PRESET=best`: the best recipe as one resumable command, each stage an ordinary run,
the record and the final blend that `make submit` submits; a tiny pipeline of quick runs for
resuming at a stage boundary, a failing stage, --no-resume and a kernel's runs coming back."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kit import config as config_io
from kit.cli import main as cli
from kit.config import Pipeline, Stage, pipeline
from kit.core.errors import KitError
from kit.data import tables
from kit.recipes import pipeline as runner
from kit.recipes.progress import PipelineListener
from kit.remote import kernels
from kit.runs import files
from tests.conftest import QUICK, SMALL_NETWORK, refusal
from tests.helpers import one_device_environment, set_flags
from tests.test_remote import credentials, runs, scripted  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[1]
# The default network shrunk to seconds: every --set applies to every CV stage.
SMALL = ["folds=2", "train.epochs=1", "grouped_folds=0", "model.stem_width=8", *SMALL_NETWORK,
         "model.head_width=16", "model.input_size=48", "model.head_stride=4", "tta_shift=0",
         "train.early_size=32"]


def kit_command(data_dir: Path, runs_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "kit", "--data", str(data_dir), "--runs", str(runs_dir), *args]


@pytest.mark.slow
def test_best_is_one_command_that_resumes_at_the_stage_it_stopped_and_submits(
        synth_competition, tmp_path, capsys):
    made, data_dir = synth_competition
    root = tmp_path / "cv"
    command = kit_command(data_dir, root, "cv", "--preset", "best", *set_flags(SMALL))
    stages = pipeline("best").stages
    taught = next(n for n, s in enumerate(stages, 1) if s.teacher)

    # Stopped (SIGTERM, as a scheduler or Kaggle's session end does) once the first taught
    # stage is training.
    process = subprocess.Popen(command, cwd=REPO, env=one_device_environment(),
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    said, in_stage = [], False
    for line in process.stdout:
        said.append(line)
        in_stage = in_stage or f"stage {taught}/{len(stages)} {stages[taught - 1].name}" in line
        if in_stage and "together" in line:
            process.send_signal(signal.SIGTERM)
            break
    said.append(process.communicate(timeout=600)[0])
    assert process.returncode == 143, "".join(said)[-3000:]
    first = {p.name: (p / "oof.csv").stat().st_mtime_ns for p in root.iterdir()
             if files.has_report(p)}
    assert len(first) == taught - 1 and not (root / "latest" / files.PIPELINE).exists()

    again = subprocess.run(command, check=False, cwd=REPO, env=one_device_environment(),
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for number, stage in enumerate(stages[:taught - 1], 1):
        assert f"stage {number}/{len(stages)} {stage.name}: finished earlier, kept" in again.stdout
    assert "carrying on with pipeline" in again.stdout
    for name, stamp in first.items():  # a finished stage is never trained again
        assert (root / name / "oof.csv").stat().st_mtime_ns == stamp
    label = f"-best-{stages[taught - 1].name}"
    assert len([p for p in root.iterdir() if p.name.endswith(label)]) == 1  # resumed, not new

    # Every stage an ordinary run; the record names them; latest is the final blend.
    final = (root / "latest").resolve()
    record = files.read_pipeline(final / files.PIPELINE)
    assert record["final"] == final.name and files.is_ensemble(final)
    assert [s["name"] for s in record["stages"]] == [s.name for s in stages]
    assert all(files.has_report(root / s["run"]) for s in record["stages"])
    members = {p.name for p in files.ensemble_members(final)}
    assert members == {entry["run"] for entry in record["stages"]
                       if entry["name"] in stages[-1].members}
    stored = files.read_pipeline(next(files.pipelines_dir(root).glob("*-best.json")))
    assert stored == record
    report = files.read_report(final)
    assert [row["role"] for row in report["pipeline"]] == [s.name for s in stages]
    assert all(row["estimate_method"] for row in report["pipeline"])
    assert "## Pipeline" in (final / "report.md").read_text()
    taught_run = root / record["stages"][taught - 1]["run"]
    assert files.read_config(taught_run).teacher == record["stages"][0]["run"]

    # show and compare read the stages; make submit submits the blend.
    assert cli.main(["--data", str(data_dir), "--runs", str(root), "compare",
                     record["stages"][0]["run"], final.name]) == 0
    assert cli.main(["--data", str(data_dir), "--runs", str(root), "submit", "--dry-run",
                     "--out", str(tmp_path / "submissions"),
                     "--solution", str(made["solution"])]) == 0
    out = capsys.readouterr().out
    assert "score against" in out and final.name in out


@pytest.mark.parametrize("assignment, expected", [
    ("pseudo_labels=0", "the pipeline best sets pseudo_labels itself"),
    ("flagged_labels=keep", "the pipeline best sets flagged_labels itself"),
    ("teacher=20240501-120000-quick", "the pipeline best sets teacher itself"),
    ("model.widths=0", "pipeline best, stage shared: model.widths=(0,): expected"),
])
def test_a_set_that_does_not_apply_is_refused_before_anything_trains(
        synth_competition, tmp_path, capsys, assignment, expected):
    _, data_dir = synth_competition
    code = cli.main(["--data", str(data_dir), "--runs", str(tmp_path / "cv"), "cv",
                     "--preset", "best", "--set", assignment])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "cv").exists()


def test_a_pipeline_is_only_a_preset_for_cv():
    message = refusal(lambda: cli.make_config(
        type("Args", (), {"preset": "best", "set": None})()))
    assert "preset 'best' is a pipeline of several runs: only `cv` runs it" in message


def test_a_set_of_what_makes_a_stage_is_refused():
    message = refusal(lambda: runner.check_overrides(TINY, ("flip_tta=1",)))
    assert "--set flip_tta=1: stage unflipped of the pipeline tiny is made of that setting" in message


def test_a_stage_that_needs_a_later_stage_is_refused():
    message = refusal(lambda: Pipeline("p", (Stage("a", teacher="b"), Stage("b"))))
    assert "stage a needs stage 'b', which does not come before it" in message


# ---------------------------------------------------------------- a tiny pipeline


TINY = Pipeline("tiny", (Stage("plain"), Stage("unflipped", sets=("flip_tta=0",)),
                         Stage("blend", members=("plain", "unflipped"))))


class Recorder(PipelineListener):
    def __init__(self, stop_at: str | None = None):
        self.said: list[str] = []
        self.stop_at = stop_at

    def note(self, text):
        self.said.append(f"note {text}")

    def stage_started(self, number, count, stage):
        self.said.append(f"started {number}/{count} {stage.name}")
        if stage.name == self.stop_at:
            raise KeyboardInterrupt  # Ctrl-C as the stage begins

    def stage_kept(self, number, count, stage, run_dir):
        self.said.append(f"kept {number}/{count} {stage.name}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, synth_competition, training):
    """A tiny pipeline stopped by Ctrl-C as its blend began, then carried on to its end."""
    _, data_dir = synth_competition
    root = tmp_path_factory.mktemp("pipeline") / "cv"
    lookup = tables.load_lookup(data_dir, tables.load_test(data_dir).image_ids)
    arguments = runner.Arguments("quick", tuple(QUICK))
    stopped = Recorder(stop_at="blend")
    with pytest.raises(KeyboardInterrupt):
        runner.run(TINY, arguments, training, data_dir, root, lookup, listener=stopped)
    carried = Recorder()
    final = runner.run(TINY, arguments, training, data_dir, root, lookup, listener=carried)
    return {"root": root, "final": final, "arguments": arguments, "lookup": lookup,
            "data_dir": data_dir, "stopped": stopped.said, "carried": carried.said}


def test_a_pipeline_stopped_between_stages_keeps_the_finished_ones(tiny):
    assert tiny["stopped"] == ["started 1/3 plain", "started 2/3 unflipped", "started 3/3 blend"]
    assert tiny["carried"][0].startswith("note carrying on with pipeline")
    assert tiny["carried"][1:] == ["kept 1/3 plain", "kept 2/3 unflipped", "started 3/3 blend"]
    made = sorted(p.name for p in tiny["root"].iterdir() if files.is_run(p)
                  and not p.is_symlink())
    assert len(made) == 3 and (tiny["root"] / "latest").resolve() == tiny["final"]
    assert files.read_config(tiny["root"] / made[0]).preset == "tiny-plain"


def test_no_resume_starts_afresh_and_a_failing_stage_is_one_line_then_resumes(tiny,
                                                                              training):
    root = tiny["root"]
    before = {p.name for p in root.iterdir()}
    said = Recorder(stop_at="blend")
    with pytest.raises(KeyboardInterrupt):
        runner.run(TINY, tiny["arguments"], training, tiny["data_dir"], root, tiny["lookup"],
                   resume=False, listener=said)
    assert said.said[0].startswith("note --no-resume: every stage of tiny starts afresh")
    assert not any(line.startswith("kept") for line in said.said)
    new = sorted(n for n in {p.name for p in root.iterdir()} - before if files.is_run(root / n))
    assert len(new) == 2  # both CV stages trained again, into runs of their own

    # A member damaged before the blend: the stage stops in one line naming it.
    member = root / new[1]
    kept = (member / files.OOF).read_bytes()
    (member / files.OOF).write_text("row,column\n1,2\n")
    try:
        message = refusal(lambda: runner.run(TINY, tiny["arguments"], training,
                                             tiny["data_dir"], root, tiny["lookup"]))
    finally:
        (member / files.OOF).write_bytes(kept)
    assert message.startswith("pipeline tiny stage 3/3 blend: ")
    assert f"{member / files.OOF}: columns row,column" in message
    assert message.endswith("running the same command again resumes it")

    # Repaired, the same call carries on with that pipeline, not the first one.
    said = Recorder()
    final = runner.run(TINY, tiny["arguments"], training, tiny["data_dir"], root,
                       tiny["lookup"], listener=said)
    assert said.said[1:] == ["kept 1/3 plain", "kept 2/3 unflipped", "started 3/3 blend"]
    assert {p.name for p in files.ensemble_members(final)} == set(new)
    assert (root / "latest").resolve() == final != tiny["final"]


def test_a_kernels_pipeline_comes_back_whole(tiny, runs, credentials, monkeypatch):  # noqa: F811
    source = tiny["root"]
    record = files.read_pipeline(tiny["final"] / files.PIPELINE)
    names = [entry["run"] for entry in record["stages"]]
    outputs = {f"cv/{path.relative_to(source)}": path.read_bytes()
               for name in names for path in (source / name).rglob("*") if path.is_file()}
    outputs[f"cv/{files.PIPELINES}/20240501-120000-tiny.json"] = json.dumps(record).encode()
    fake = scripted(monkeypatch, [("COMPLETE", "")], files=outputs)
    try:
        entry = kernels.push(runs, ["--preset", "best"], "best", kernels.KernelOptions())
        final = kernels.fetch(runs, entry)
        # Fetched again into the same folder: the names are taken, so nothing moves.
        message = refusal(lambda: kernels.fetch(runs, dict(entry)))
    finally:
        fake.stop()
    assert final == runs / record["final"] and (runs / "latest").resolve() == final
    assert all(files.has_report(runs / name) for name in names)
    assert {p.name for p in files.ensemble_members(final)} <= set(names)
    assert (runs / files.PIPELINES / "20240501-120000-tiny.json").is_file()
    stored = json.loads((final / "remote.json").read_text())
    assert stored["run"] == final.name and stored["runs"] == sorted(names)
    assert "exist in" in message and "none was moved" in message


def test_the_pipelines_record_is_refused_in_one_line_when_damaged(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"pipeline": "best", "arguments": {}, "stages": 3}')
    with pytest.raises(KitError, match=r"p.json: `stages` damaged"):
        files.read_pipeline(path)


def test_a_remote_pipeline_checks_its_stages_before_pushing(tmp_path, runs, credentials):  # noqa: F811
    assert cli.main(["--runs", str(runs), "cv", "--preset", "best", "--set", "pseudo_labels=0",
                     "--remote", "kaggle"]) == 1
    assert not list(Path(runs).glob("*"))


def test_the_shipped_pipelines_plan_on_both_bases():
    for base in ("default", "gpu"):
        plans = runner.plan(pipeline("best"), runner.Arguments(base, ()))
        assert plans[-1].config is None and all(p.config for p in plans[:-1])
        assert {p.config.preset for p in plans[:-1]} == {
            f"best-{s.name}" for s in pipeline("best").stages[:-1]}
        widths = {p.stage.name: p.config.model.widths for p in plans[:-1]}
        wide = [p.stage for p in plans[:-1] if p.stage.widen != 1.0]
        assert wide, "the best pipeline's taught stage is the wider network"
        for stage in wide:  # a factor of the base's widths: on gpu it stays wider
            expected = config_io.preset(base).model.widened(stage.widen).widths
            assert widths[stage.name] == expected != widths["shared"]
        epochs = {p.stage.name: p.config.train.epochs for p in plans[:-1]}
        for stage in (p.stage for p in plans[:-1]):  # a factor of the base's epochs
            assert epochs[stage.name] == round(
                config_io.preset(base).train.epochs * stage.lengthen)


def test_a_wider_longer_stage_scales_the_users_network_and_epochs_and_says_so():
    wide = Pipeline("w", (Stage("a"), Stage("b", sets=("flip_tta=0",), widen=2, lengthen=0.75)))
    plans = runner.plan(wide, runner.Arguments("default", ("model.widths=8,16",
                                                           "model.stem_width=4",
                                                           "train.epochs=10")))
    assert plans[0].config.model.widths == (8, 16) and plans[1].config.model.widths == (16, 32)
    assert plans[1].config.model.stem_width == 8
    assert plans[0].config.train.epochs == 10 and plans[1].config.train.epochs == 8  # round(7.5)
    short = runner.plan(wide, runner.Arguments("default", ("train.epochs=1",)))
    assert short[1].config.train.epochs == 1  # never rounded to no training at all
    assert "  2. b: flip_tta=0, 2x as wide, 0.75x the epochs" in runner.describe(wide)
    stages = runner.new_record(wide, runner.Arguments("default", ()))["stages"]
    assert (stages[1]["widen"], stages[1]["lengthen"]) == (2, 0.75)
    assert (stages[0]["widen"], stages[0]["lengthen"]) == (1, 1)
    message = refusal(lambda: Pipeline("z", (Stage("a", widen=0),)))
    assert "stage a widen=0: expected a factor above 0" in message
    message = refusal(lambda: Pipeline("z", (Stage("a", lengthen=-1),)))
    assert "stage a lengthen=-1: expected a factor above 0" in message
