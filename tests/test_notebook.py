"""Notebook mode: the competition as a Kaggle notebook sees it (a temporary tree standing for
/kaggle, via KIT_KAGGLE_ROOT), in both layouts; caches in scratch, runs and submission.csv in
working/, nothing written under input/."""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kit.cli import console, display
from kit.cli import main as cli
from kit.core.errors import KitError
from kit.core.keypoints import KEYPOINT_NAMES
from kit.data import archive as archive_io
from kit.data import download, tables
from kit.kaggle import places
from tests.conftest import SMALL_NETWORK_FIELDS

LAYOUTS = ("nested", "extracted")


def kaggle_tree(root: Path, archive: Path, layout: str) -> Path:
    """root/ as Kaggle lays it out, the competition at input/<name>/ in `layout`:
    "nested" is how Kaggle serves it (training.zip, test.zip beside the two CSVs);
    "extracted" is training/training.csv and test/test.csv, as older notebooks see it."""
    folder = root / "input" / "facial-keypoints-detection"
    folder.mkdir(parents=True)
    (root / "working").mkdir()
    (root / "temp").mkdir()
    with zipfile.ZipFile(archive) as outer:
        for name in outer.namelist():
            content = outer.read(name)
            if layout == "extracted" and name.endswith(".zip"):
                with zipfile.ZipFile(io.BytesIO(content)) as inner:
                    inner.extractall(folder / name.removesuffix(".zip"))
            else:
                (folder / name).write_bytes(content)
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def on_kaggle(tmp_path, monkeypatch):
    """A function making a Kaggle tree in `layout` and pointing the kit at it."""
    for name in ("KIT_DATA", "KIT_RUNS", "KIT_SUBMISSIONS", "KAGGLE_KERNEL_RUN_TYPE"):
        monkeypatch.delenv(name, raising=False)

    def make(archive: Path, layout: str = "nested") -> Path:
        root = tmp_path / "kaggle"
        kaggle_tree(root, archive, layout)
        monkeypatch.setenv(places.ROOT_VARIABLE, str(root))
        return root

    return make


@pytest.fixture
def off_kaggle(tmp_path, monkeypatch):
    for name in ("KIT_DATA", "KIT_RUNS", "KIT_SUBMISSIONS", "KAGGLE_KERNEL_RUN_TYPE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(places.ROOT_VARIABLE, str(tmp_path / "no-kaggle-here"))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_both_layouts_load_the_same_data_into_scratch(layout, synth_competition, on_kaggle):
    made, local_data = synth_competition
    root = on_kaggle(made["archive"], layout)
    before = snapshot(root / "input")
    assert places.on_kaggle()
    data_dir = places.default_data_dir()
    assert data_dir == root / "temp" / "kit-data"

    message = download.prepare_notebook_data(data_dir)
    assert message and str(root / "input" / "facial-keypoints-detection") in message
    assert f"{made['n_train']} training rows" in message

    training, expected = tables.load_training(data_dir), tables.load_training(local_data)
    np.testing.assert_array_equal(training.images, expected.images)
    np.testing.assert_array_equal(training.keypoints, expected.keypoints)
    np.testing.assert_array_equal(tables.load_test(data_dir).images,
                                  tables.load_test(local_data).images)
    assert len(tables.load_lookup(data_dir)) == made["n_lookup_rows"]
    assert sorted((data_dir / "cache").glob("*.npz"))  # parsed caches: in scratch
    assert snapshot(root / "input") == before  # nothing written under input/
    assert list((root / "working").iterdir()) == []  # nor into what Kaggle saves


def test_a_second_prepare_is_a_no_op_and_a_changed_input_is_taken_again(synth_competition,
                                                                        on_kaggle, monkeypatch):
    made, _ = synth_competition
    root = on_kaggle(made["archive"])
    data_dir = places.notebook_data_dir()
    assert download.prepare_notebook_data(data_dir)

    def no_unpack(*args, **kwargs):
        raise AssertionError("unpacked again")

    with monkeypatch.context() as patch:
        patch.setattr(archive_io, "unpack_folder", no_unpack)
        assert download.prepare_notebook_data(data_dir) is None
    lookup = root / "input" / "facial-keypoints-detection" / "IdLookupTable.csv"
    lookup.write_bytes(lookup.read_bytes())  # a new mount: same bytes, a new time
    assert download.prepare_notebook_data(data_dir)


def test_off_kaggle_the_defaults_are_the_checkout_folders(off_kaggle, monkeypatch, tmp_path):
    assert not places.on_kaggle() and places.competition_input() is None
    assert places.default_data_dir() == Path("data")
    assert places.default_runs_dir() == Path("cv")
    assert places.default_submissions_dir() == Path("submissions")
    assert download.prepare_notebook_data(Path("data")) is None
    assert places.publish_submission(tmp_path / "any.csv") is None
    monkeypatch.setenv("KIT_DATA", str(tmp_path / "mine"))
    assert places.default_data_dir() == tmp_path / "mine"


def test_on_kaggle_runs_and_submissions_go_to_working(synth_competition, on_kaggle):
    root = on_kaggle(synth_competition[0]["archive"])
    assert places.default_runs_dir() == root / "working" / "cv"
    assert places.default_submissions_dir() == root / "working" / "submissions"
    assert places.notebook_submission_path() == root / "working" / "submission.csv"
    args = cli.parser().parse_args(["cv"])
    assert args.data == root / "temp" / "kit-data" and args.runs == root / "working" / "cv"


def test_scratch_is_the_temp_dir_when_kaggle_has_no_temp(synth_competition, on_kaggle,
                                                         tmp_path, monkeypatch):
    root = on_kaggle(synth_competition[0]["archive"])
    (root / "temp").rmdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmpdir"))
    assert places.notebook_data_dir() == tmp_path / "tmpdir" / "kit" / "kit-data"


def test_a_notebook_without_the_competition_says_how_to_add_it(off_kaggle, monkeypatch):
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    assert places.on_kaggle()
    with pytest.raises(KitError, match="Add Input > Competitions > facial-keypoints-detection"):
        download.prepare_notebook_data(places.notebook_data_dir())


def test_an_incomplete_input_folder_names_what_is_missing(synth_competition, on_kaggle):
    root = on_kaggle(synth_competition[0]["archive"])
    (root / "input" / "facial-keypoints-detection" / "test.zip").unlink()
    with pytest.raises(KitError, match=r"no test\.zip, test/test\.csv or test\.csv"):
        download.prepare_notebook_data(places.notebook_data_dir())


def test_download_on_kaggle_takes_the_mounted_competition(synth_competition, on_kaggle):
    made, _ = synth_competition
    root = on_kaggle(made["archive"], "extracted")
    result = download.download(root / "temp" / "here")  # no archive, no credentials: no API call
    assert result.unpacked and not result.fetched
    assert result.source == root / "input" / "facial-keypoints-detection"
    assert result.counts["training_rows"] == made["n_train"]


@pytest.mark.slow
def test_notebook_api_runs_cv_shows_it_and_writes_submission_csv(synth_competition, on_kaggle,
                                                                 tmp_path, monkeypatch, capsys):
    import kit.cli.notebook as kn
    from tests.fake_kaggle import isolated_kaggle_home

    isolated_kaggle_home(tmp_path, monkeypatch)  # a notebook without credentials
    root = on_kaggle(synth_competition[0]["archive"])
    before = snapshot(root / "input")
    run = kn.cv(preset="quick", folds=2, epochs=1,
                overrides={"grouped_folds": 0, **SMALL_NETWORK_FIELDS})
    assert run.parent == root / "working" / "cv" and (run / "report.json").is_file()
    kn.show(run)
    path = kn.submit(run)
    out = capsys.readouterr().out
    assert "leaderboard estimate" in out and "not uploaded" in out
    assert path == root / "working" / "submission.csv" and path.is_file()
    assert path.read_text().splitlines()[0] == "RowId,Location"
    assert sorted(p.name for p in (root / "working").iterdir()) == [
        "cv", "submission.csv", "submissions"]
    assert snapshot(root / "input") == before
    assert not list((root / "working").rglob("*.npz.part")) and not list(
        (root / "working").rglob("cache"))


# ---------------------------------------------------------------- live or plain, and figures


@pytest.mark.parametrize("is_terminal, is_jupyter, has_ipywidgets, redraws", [
    (True, False, False, True),    # a terminal
    (False, False, False, False),  # a log: a batch kernel, nohup, CI
    (False, False, True, False),   # a log, whatever is installed
    (False, True, True, True),     # Jupyter with ipywidgets: rich draws into a widget
    (False, True, False, False),   # Jupyter without: rich would warn and show nothing
])
def test_bars_redraw_in_a_terminal_or_in_jupyter_with_ipywidgets(is_terminal, is_jupyter,
                                                                 has_ipywidgets, redraws):
    assert console.can_redraw(is_terminal, is_jupyter, has_ipywidgets) is redraws


def test_a_spinner_where_nothing_redraws_is_one_plain_line():
    log = io.StringIO()
    plain = console.Console(file=log, force_terminal=False, width=200)
    with plain.status("writing the report and pictures"):
        pass
    assert log.getvalue() == "writing the report and pictures ...\n"
    assert not display.CVDisplay(plain).live


def test_figures_are_the_reports_tables_as_dataframes(quick_run, monkeypatch):
    import kit.cli.notebook as kn

    monkeypatch.setenv("KIT_RUNS", str(quick_run.parent))
    result = json.loads((quick_run / "report.json").read_text())
    tables_ = kn.figures(quick_run.name)
    assert set(tables_) == {"summary", "per_fold", "per_keypoint"}
    summary = tables_["summary"]["RMSE (px)"]
    assert summary["OOF, all values"] == pytest.approx(result["overall_rmse"])
    assert summary["OOF, 4-key model"] == pytest.approx(result["subsets"]["4"]["rmse"])
    per_fold = tables_["per_fold"]
    assert list(per_fold.columns) == ["fold 0", "fold 1", "mean", "spread"]
    assert per_fold.loc["15", "fold 1"] == pytest.approx(result["subsets"]["15"]["per_fold"]["1"])
    per_keypoint = tables_["per_keypoint"]
    assert list(per_keypoint.index) == list(KEYPOINT_NAMES)
    assert per_keypoint.loc["nose_tip", "4-key"] == pytest.approx(
        result["subsets"]["4"]["per_keypoint"]["nose_tip"])
    assert np.isnan(per_keypoint.loc["left_eyebrow_outer_end", "4-key"])  # not a core keypoint


def test_show_outside_a_kernel_prints_the_tables_only(quick_run, capsys):
    import kit.cli.notebook as kn

    kn.show(quick_run)
    out = capsys.readouterr().out
    assert "Per keypoint" in out and "leaderboard estimate" in out
    assert [p.name for p in kn.pictures(quick_run)] == [
        "curves.png", "keypoint-error.png", "errors-on-face.png", "worst.png", "label-noise.png"]
