"""kit.submit.submission: the lookup fill at full size, validation, the ledger, the upload through the
real kaggle client against tests/fake_kaggle.py, and write_submission on a synthetic run."""
import os

# KaggleApi decides where to connect when it is first imported, so this must come before
# anything imports it (kit.kaggle.client imports it lazily). See tests/fake_kaggle.py.
os.environ["KAGGLE_API_ENVIRONMENT"] = "LOCALHOST"

import hashlib
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit import config as config_io
from kit.core.errors import KitError
from kit.core.keypoints import COLUMN_INDEX, COLUMNS, CORE_COLUMN_INDICES, CORE_COLUMNS
from kit.data import lookup as lookup_rules
from kit.data import tables
from kit.data.tables import LookupTable
from kit.submit import ledger as ledger_io
from kit.submit import submission, validate
from kit.submit.ledger import LEDGER_COLUMNS
from kit.submit.submission import Submission
from tests.fake_kaggle import FakeKaggle, isolated_kaggle_home, write_kaggle_json

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
KAGGLE_FORMAT = SHARED / "data" / "kaggle-format"
SCORE_SCRIPT = SHARED / "tools" / "score.py"
needs_shared = pytest.mark.skipif(
    not (KAGGLE_FORMAT / "IdLookupTable.csv").is_file(),
    reason=f"{KAGGLE_FORMAT} is absent: the real competition's lookup table lives in ../shared",
)

FAKE_USER = "fake-user"
FAKE_KEY = "fakekey0123456789abcdef"
FIRST_CORE_IMAGE = 592  # in Kaggle's table, ImageIds 592-1783 ask only the 8 core values


# ---------------------------------------------------------------- encoded predictions


def encoded(image_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Predictions whose value names its image, its column and its model:
    ImageId * 0.05 + column * 1e-4 + (1e-5 for the 15-key model, 2e-5 for the 4-key one)."""
    base = np.asarray(image_ids, np.float64)[:, None] * 0.05
    return {
        "15": base + np.arange(len(COLUMNS)) * 1e-4 + 1e-5,
        "4": base + CORE_COLUMN_INDICES * 1e-4 + 2e-5,
    }


def expected_value(lookup: LookupTable, from_four: np.ndarray) -> np.ndarray:
    return lookup.image_ids * 0.05 + lookup.columns * 1e-4 + np.where(from_four, 2e-5, 1e-5)


@pytest.fixture(scope="module")
def kaggle_tables():
    if not (KAGGLE_FORMAT / "IdLookupTable.csv").is_file():
        pytest.skip(f"{KAGGLE_FORMAT} is absent: the real lookup table lives in ../shared")
    lookup = tables.parse_lookup(KAGGLE_FORMAT / "IdLookupTable.csv")
    sample = tables.parse_sample(KAGGLE_FORMAT / "SampleSubmission.csv")
    return lookup, sample


@pytest.fixture
def shuffled_ids():
    # Test ImageIds in a scrambled order: a fill that assumed row i = ImageId i + 1 would fail.
    return np.random.default_rng(0).permutation(np.arange(1, 1784))


# ---------------------------------------------------------------- full size


@needs_shared
def test_full_size_rows_land_on_their_image_and_feature(kaggle_tables, shuffled_ids, tmp_path):
    lookup, sample = kaggle_tables
    started = time.perf_counter()
    locations = lookup_rules.fill_lookup(lookup, shuffled_ids, encoded(shuffled_ids), {})
    assert time.perf_counter() - started < 1.0
    assert len(locations) == 27124
    core_image = lookup.image_ids >= FIRST_CORE_IMAGE
    assert np.isin(lookup.columns[core_image], CORE_COLUMN_INDICES).all()  # Kaggle's layout
    np.testing.assert_allclose(locations, expected_value(lookup, core_image), rtol=0, atol=1e-9)

    path = tmp_path / "submission.csv"
    path.write_bytes(submission.csv_bytes(lookup.row_ids, locations))
    written = pd.read_csv(path)
    assert list(written.columns) == ["RowId", "Location"]
    assert np.array_equal(written["RowId"].to_numpy(), sample)
    np.testing.assert_allclose(written["Location"], locations, atol=5e-6)
    validate.validate(path, lookup, sample)


@needs_shared
def test_core_choice_sends_chosen_core_values_of_full_images_to_the_4_key_model(
        kaggle_tables, shuffled_ids):
    lookup, _ = kaggle_tables
    choice = {name: "15" for name in CORE_COLUMNS}
    choice.update(left_eye_center_x="4", nose_tip_y="4")
    locations = lookup_rules.fill_lookup(lookup, shuffled_ids, encoded(shuffled_ids), choice)
    chosen = np.isin(lookup.columns, [COLUMN_INDEX["left_eye_center_x"],
                                      COLUMN_INDEX["nose_tip_y"]])
    from_four = (lookup.image_ids >= FIRST_CORE_IMAGE) | chosen
    np.testing.assert_allclose(locations, expected_value(lookup, from_four), rtol=0, atol=1e-9)
    assert (chosen & (lookup.image_ids < FIRST_CORE_IMAGE)).sum() > 1000  # the rule was used


@needs_shared
@pytest.mark.parametrize(("subset", "image_id", "column"), [
    ("15", 7, "nose_tip_x"),
    ("4", 1000, "mouth_center_bottom_lip_y"),
])
def test_nan_or_inf_prediction_names_the_image_and_feature(kaggle_tables, shuffled_ids, subset,
                                                           image_id, column):
    lookup, _ = kaggle_tables
    predictions = encoded(shuffled_ids)
    row = int(np.flatnonzero(shuffled_ids == image_id)[0])
    columns = COLUMNS if subset == "15" else CORE_COLUMNS
    predictions[subset][row, columns.index(column)] = np.nan if subset == "15" else np.inf
    with pytest.raises(KitError) as caught:
        lookup_rules.fill_lookup(lookup, shuffled_ids, predictions, {})
    assert f"ImageId {image_id}," in str(caught.value) and column in str(caught.value)
    assert "\n" not in str(caught.value)


@needs_shared
def test_nan_in_a_value_nobody_asks_for_is_harmless(kaggle_tables, shuffled_ids):
    lookup, _ = kaggle_tables
    predictions = encoded(shuffled_ids)
    # A core image's eyebrow from the 15-key model and a full image's 4-key values are unused.
    predictions["15"][shuffled_ids == 1000, COLUMN_INDEX["left_eyebrow_outer_end_x"]] = np.nan
    predictions["4"][shuffled_ids == 3] = np.nan
    assert np.isfinite(lookup_rules.fill_lookup(lookup, shuffled_ids, predictions, {})).all()


@needs_shared
def test_values_are_clipped_to_the_image(kaggle_tables, shuffled_ids):
    lookup, _ = kaggle_tables
    predictions = encoded(shuffled_ids)
    first = shuffled_ids == 1
    predictions["15"][first, 0] = -5.0
    predictions["15"][first, 1] = 120.0
    predictions["4"][shuffled_ids == 1783, 0] = 96.5
    locations = lookup_rules.fill_lookup(lookup, shuffled_ids, predictions, {})
    assert locations[0] == 0.0 and locations[1] == 96.0  # RowIds 1, 2: ImageId 1, left eye x, y
    last_image_first_row = int(np.flatnonzero(lookup.image_ids == 1783)[0])
    assert locations[last_image_first_row] == 96.0
    assert locations.min() >= 0.0 and locations.max() <= 96.0


# ---------------------------------------------------------------- small lookup tables


def small_lookup(asked: dict[int, list[str]]) -> LookupTable:
    image_ids = [image for image, names in asked.items() for _ in names]
    columns = [COLUMN_INDEX[name] for names in asked.values() for name in names]
    return LookupTable(row_ids=np.arange(1, len(columns) + 1), image_ids=np.array(image_ids),
                       columns=np.array(columns))


def test_core_image_asking_a_non_core_value_gets_the_15_key_model():
    asked = {1: list(COLUMNS), 2: list(CORE_COLUMNS[:7]) + ["mouth_left_corner_x"]}
    lookup = small_lookup(asked)
    ids = np.array([2, 1])
    locations = lookup_rules.fill_lookup(lookup, ids, encoded(ids), {})
    from_four = (lookup.image_ids == 2) & np.isin(lookup.columns, CORE_COLUMN_INDICES)
    assert from_four.sum() == 7
    np.testing.assert_allclose(locations, expected_value(lookup, from_four), rtol=0, atol=1e-9)


def test_a_run_without_one_model_uses_the_other_where_it_can():
    lookup = small_lookup({1: list(COLUMNS), 2: list(CORE_COLUMNS)})
    ids = np.array([1, 2])
    only_fifteen = {"15": encoded(ids)["15"]}
    locations = lookup_rules.fill_lookup(lookup, ids, only_fifteen, {"nose_tip_x": "4"})
    np.testing.assert_allclose(locations, expected_value(lookup, np.zeros(len(lookup), bool)),
                               atol=1e-9)
    with pytest.raises(KitError, match="only a 4-key model"):
        lookup_rules.fill_lookup(lookup, ids, {"4": encoded(ids)["4"]}, {})


def test_lookup_image_without_prediction_and_wrong_shapes_are_refused():
    lookup = small_lookup({1: list(CORE_COLUMNS), 5: list(CORE_COLUMNS)})
    ids = np.array([1, 2])
    with pytest.raises(KitError, match="ImageId 5 .*no prediction"):
        lookup_rules.fill_lookup(lookup, ids, encoded(ids), {})
    ids = np.array([1, 5])
    with pytest.raises(KitError, match=r"shape \(2, 29\); expected \(2, 30\)"):
        lookup_rules.fill_lookup(lookup, ids, {"15": np.zeros((2, 29))}, {})


# ---------------------------------------------------------------- validate


VALID = "RowId,Location\n1,10.5\n2,20.25\n3,0\n4,96\n5,48.125\n6,1e1\n"


@pytest.fixture
def six_rows():
    lookup = small_lookup({1: list(CORE_COLUMNS[:3]), 2: list(CORE_COLUMNS[:3])})
    return lookup, lookup.row_ids.copy()


def test_validate_accepts_a_good_file_with_or_without_crlf(six_rows, tmp_path):
    lookup, sample = six_rows
    path = tmp_path / "good.csv"
    path.write_text(VALID)
    validate.validate(path, lookup, sample)
    path.write_text(VALID.replace("\n", "\r\n"))
    validate.validate(path, lookup, sample)


def _edit(lines: list[str], line: int, new: str | None) -> list[str]:
    out = list(lines)
    if new is None:
        del out[line - 1]
    else:
        out[line - 1] = new
    return out


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda lines: _edit(lines, 1, "RowId,Prediction"), r"line 1 .*expected the header"),
    (lambda lines: _edit(lines, 1, "rowid,location"), r"line 1 .*RowId,Location"),
    (lambda lines: _edit(lines, 4, None), r"line 4: RowId 3 is missing"),
    (lambda lines: _edit(_edit(lines, 3, "3,1"), 4, "2,1"), r"line 3: RowId 3; expected 2"),
    (lambda lines: _edit(lines, 4, "2,1"), r"line 4: RowId 2 again \(first on line 3\)"),
    (lambda lines: lines + ["7,1"], r"line 8: RowId 7 is not in IdLookupTable"),
    (lambda lines: lines + ["6,1"], r"line 8: RowId 6 again"),
    (lambda lines: _edit(lines, 5, "4,abc"), r"line 5: Location 'abc'; expected a finite"),
    (lambda lines: _edit(lines, 5, "4,"), r"line 5: Location ''; expected a finite"),
    (lambda lines: _edit(lines, 5, "4,nan"), r"line 5: Location 'nan'; expected a finite"),
    (lambda lines: _edit(lines, 5, "4,NaN"), r"line 5: Location 'NaN'"),
    (lambda lines: _edit(lines, 5, "4,inf"), r"line 5: Location 'inf'; expected a finite"),
    (lambda lines: _edit(lines, 5, "4,-0.5"), r"line 5: Location '-0.5'; expected a number in"),
    (lambda lines: _edit(lines, 5, "4,96.01"), r"line 5: Location '96.01'; expected a number"),
    (lambda lines: _edit(lines, 5, "4,1,2"), r"line 5 is '4,1,2'; expected RowId,Location"),
    (lambda lines: _edit(lines, 5, "x,1"), r"line 5: RowId 'x'; expected an integer"),
    (lambda lines: _edit(lines, 5, ""), r"line 5 is ''"),
])
def test_validate_refuses(six_rows, tmp_path, edit, expected):
    lookup, sample = six_rows
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(edit(VALID.splitlines())) + "\n")
    with pytest.raises(KitError, match=expected) as caught:
        validate.validate(path, lookup, sample)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


def test_validate_refuses_an_empty_file_and_a_sample_that_disagrees(six_rows, tmp_path):
    lookup, sample = six_rows
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(KitError, match="line 1 is nothing"):
        validate.validate(path, lookup, sample)
    path.write_text(VALID)
    with pytest.raises(KitError, match="SampleSubmission.csv"):
        validate.validate(path, lookup, sample[::-1])


# ---------------------------------------------------------------- the ledger


def ledger_row(**values) -> dict:
    row = {"time": "2024-05-01T12:00:00+00:00", "run": "20240501-quick", "file": "a.csv",
           "sha256": "ab" * 32, "cv_rmse": 2.5, "lb_estimate": 2.75, "uploaded": "yes",
           "ref": "", "status": "", "public_score": None, "private_score": None, "message": ""}
    row.update(values)
    return row


def test_read_of_a_missing_ledger_is_empty(tmp_path):
    table = ledger_io.read_ledger(tmp_path / "ledger.csv")
    assert len(table) == 0 and tuple(table.columns) == LEDGER_COLUMNS
    assert not (tmp_path / "ledger.csv").exists()


def test_append_keeps_earlier_rows_byte_identical(tmp_path):
    path = tmp_path / "submissions" / "ledger.csv"
    ledger_io.append_ledger(path, ledger_row(ref="1", status="COMPLETE", public_score=2.9))
    first = path.read_bytes()
    assert first.startswith(b"time,run,file,sha256,cv_rmse,lb_estimate,uploaded,ref,status,")
    ledger_io.append_ledger(path, ledger_row(uploaded="no",
                                              message='refused, "403"\nby Kaggle'))
    second = path.read_bytes()
    assert second.startswith(first) and second.count(b"\n") == 3
    assert [p.name for p in path.parent.iterdir()] == ["ledger.csv"]  # no temporary left
    table = ledger_io.read_ledger(path)
    assert list(table["uploaded"]) == ["yes", "no"]
    assert table["public_score"].iloc[0] == 2.9 and np.isnan(table["public_score"].iloc[1])
    assert table["message"].iloc[1] == 'refused, "403" by Kaggle'  # one line a row
    with pytest.raises(KitError, match="unknown columns score"):
        ledger_io.append_ledger(path, {"score": 1})
    assert path.read_bytes() == second


def test_update_touches_only_the_pending_rows_score_columns(tmp_path):
    path = tmp_path / "ledger.csv"
    ledger_io.append_ledger(path, ledger_row(ref="11", status="COMPLETE", public_score=3.0))
    ledger_io.append_ledger(path, ledger_row(ref="12", status="PENDING", message="mine, 2"))
    ledger_io.append_ledger(path, ledger_row(ref="13", status="PENDING"))
    ledger_io.append_ledger(path, ledger_row(uploaded="no", message="401"))
    before = path.read_bytes().splitlines(keepends=True)
    score = {"status": "COMPLETE", "public_score": 2.345, "private_score": 2.5, "ref": "99",
             "message": "not mine to change"}
    changed = ledger_io.update_ledger_scores(path, {
        11: {**score, "public_score": 1.0},  # already COMPLETE: stays as it is
        12: score,
        13: {"status": "PENDING", "public_score": None, "private_score": None},  # still waiting
    })
    after = path.read_bytes().splitlines(keepends=True)
    assert changed == 1
    assert [i for i in range(len(before)) if before[i] != after[i]] == [2]
    table = ledger_io.read_ledger(path)
    updated = table.iloc[1]
    assert (updated["status"], updated["public_score"], updated["private_score"]) == \
        ("COMPLETE", 2.345, 2.5)
    assert (updated["ref"], updated["message"], updated["sha256"]) == ("12", "mine, 2", "ab" * 32)
    assert list(table["status"]) == ["COMPLETE", "COMPLETE", "PENDING", ""]


def test_a_foreign_file_is_not_taken_for_a_ledger(tmp_path):
    path = tmp_path / "ledger.csv"
    path.write_text("RowId,Location\n1,2\n")
    with pytest.raises(KitError, match="expected the ledger header"):
        ledger_io.append_ledger(path, ledger_row())
    with pytest.raises(KitError, match="expected the ledger header"):
        ledger_io.read_ledger(path)


# ---------------------------------------------------------------- upload (fake Kaggle)


@pytest.fixture
def kaggle_home(tmp_path, monkeypatch):
    """A fresh HOME and KAGGLE_CONFIG_DIR with a fake kaggle.json; no user credential leaks in."""
    config_dir = isolated_kaggle_home(tmp_path, monkeypatch)
    write_kaggle_json(config_dir, FAKE_USER, FAKE_KEY)
    return config_dir


@pytest.fixture
def server(kaggle_home, monkeypatch):
    with FakeKaggle(public_score="2.345", private_score="2.5") as fake:
        fake.install(monkeypatch)
        yield fake


@pytest.fixture
def small_submission(tmp_path):
    path = tmp_path / "submissions" / "20240501-quick-20240502-101010.csv"
    path.parent.mkdir()
    path.write_bytes(submission.csv_bytes(np.arange(1, 7), np.linspace(10, 60, 6)))
    return Submission.from_csv(path, run_id="20240501-quick", cv_rmse=2.25, lb_estimate=2.5)


def no_sleep(_seconds: float) -> None:
    pass


def test_submission_from_csv_reads_its_manifest(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"RowId,Location\n1,2\n2,3\n")
    path.with_suffix(".json").write_text(json.dumps({"run": "r1", "cv_rmse": 1.5,
                                                     "lb_estimate": None}))
    made = Submission.from_csv(path)
    assert (made.run_id, made.cv_rmse, made.lb_estimate, made.rows) == ("r1", 1.5, None, 2)
    assert made.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert made.manifest_path == path.with_suffix(".json")


def test_upload_sends_the_file_and_records_the_score(server, small_submission, tmp_path):
    ledger = tmp_path / "submissions" / "ledger.csv"
    row = ledger_io.upload(small_submission, "quick run, flip TTA", ledger, poll=0,
                            sleep=no_sleep)
    (upload,) = server.uploads
    assert upload.data == small_submission.csv_path.read_bytes()
    assert upload.file_name == small_submission.csv_path.name
    assert server.submissions[0].description == "quick run, flip TTA"
    assert row["ref"] == str(server.submissions[0].ref) and row["status"] == "COMPLETE"
    (recorded,) = ledger_io.read_ledger(ledger).to_dict("records")
    assert recorded["public_score"] == 2.345 and recorded["private_score"] == 2.5
    assert (recorded["uploaded"], recorded["status"], recorded["ref"]) == \
        ("yes", "COMPLETE", str(server.submissions[0].ref))
    assert (recorded["run"], recorded["cv_rmse"], recorded["lb_estimate"]) == \
        ("20240501-quick", 2.25, 2.5)
    assert recorded["sha256"] == small_submission.sha256
    assert recorded["message"] == "quick run, flip TTA"
    assert FAKE_KEY not in ledger.read_text()


@pytest.mark.parametrize(("method", "status", "expected"), [
    ("StartSubmissionUpload", 401, "rejected the credentials (401)"),
    ("CreateSubmission", 403, "accept the rules"),
    ("CreateSubmission", 500, "server error (500)"),
])
def test_refused_upload_keeps_the_file_and_records_why(server, small_submission, tmp_path,
                                                       method, status, expected):
    server.fail(method, status)  # every call, not just the first
    ledger = tmp_path / "ledger.csv"
    content = small_submission.csv_path.read_bytes()
    with pytest.raises(KitError) as caught:
        ledger_io.upload(small_submission, "message", ledger, poll=0, sleep=no_sleep)
    assert expected in str(caught.value) and FAKE_KEY not in str(caught.value)
    assert small_submission.csv_path.read_bytes() == content
    assert server.submissions == []
    (recorded,) = ledger_io.read_ledger(ledger).to_dict("records")
    assert recorded["uploaded"] == "no" and recorded["ref"] == ""
    assert expected in recorded["message"]


def test_pending_past_the_timeout_stays_pending_until_a_refresh(server, small_submission,
                                                                tmp_path):
    server.pending_polls = 10**6
    ledger = tmp_path / "ledger.csv"
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    row = ledger_io.upload(small_submission, "slow", ledger, timeout=30, poll=10,
                            clock=lambda: now[0], sleep=sleep)
    assert row["status"] == "PENDING" and now[0] == 30
    recorded = ledger_io.read_ledger(ledger).iloc[0]
    assert recorded["status"] == "PENDING" and np.isnan(recorded["public_score"])
    assert recorded["ref"] == str(server.submissions[0].ref)

    server.pending_polls = 0
    table = ledger_io.refresh_ledger(ledger)
    assert table["status"].iloc[0] == "COMPLETE" and table["public_score"].iloc[0] == 2.345
    calls = len(server.calls)
    ledger_io.refresh_ledger(ledger)  # nothing pending: no call to Kaggle
    assert len(server.calls) == calls


def test_refresh_matches_a_row_without_ref_by_file_name(server, tmp_path):
    ledger = tmp_path / "ledger.csv"
    ledger_io.append_ledger(ledger, ledger_row(file="submissions/b.csv", status="PENDING"))
    ledger_io.append_ledger(ledger, ledger_row(file="c.csv", uploaded="no", message="401"))
    server.add_submission("b.csv")
    table = ledger_io.refresh_ledger(ledger)
    assert list(table["status"]) == ["COMPLETE", ""]
    assert table["public_score"].iloc[0] == 2.345


def test_a_file_changed_after_writing_is_not_uploaded(server, small_submission, tmp_path):
    small_submission.csv_path.write_bytes(b"RowId,Location\n1,0\n")
    with pytest.raises(KitError, match="changed since it was written"):
        ledger_io.upload(small_submission, "m", tmp_path / "ledger.csv", sleep=no_sleep)
    assert server.calls == []


# ---------------------------------------------------------------- write_submission


def fake_run(root: Path, subsets=("15", "4"), report: dict | None = None) -> Path:
    run_dir = root / "20240501-101010-quick"
    run_dir.mkdir(parents=True)
    config = config_io.override(config_io.preset("quick"), [f"subsets={','.join(subsets)}"])
    (run_dir / "config.json").write_text(json.dumps(config_io.to_dict(config)))
    if report is None:
        report = {"overall_rmse": 1.5, "subsets": {s: {"rmse": 1.25} for s in subsets},
                  "core_choice": {"nose_tip_x": "4"}, "leaderboard_estimate": {"rmse": 1.75}}
    (run_dir / "report.json").write_text(json.dumps(report))
    return run_dir


def score(csv_path: Path, solution: Path) -> str:
    result = subprocess.run([sys.executable, str(SCORE_SCRIPT), str(csv_path), str(solution)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_write_submission_refuses_runs_that_do_not_fit(synth_competition, tmp_path, monkeypatch):
    _, data_dir = synth_competition
    out_dir = tmp_path / "submissions"

    unfinished = fake_run(tmp_path / "a")
    (unfinished / "report.json").unlink()
    with pytest.raises(KitError, match=r"no report.json yet; run `make cv`"):
        submission.write_submission(unfinished, data_dir, out_dir)

    mismatched = fake_run(tmp_path / "b", report={"subsets": {"15": {}}, "core_choice": {}})
    with pytest.raises(KitError, match="reports subsets 15 but config.json trains 15, 4"):
        submission.write_submission(mismatched, data_dir, out_dir)

    core_only = fake_run(tmp_path / "c", subsets=("4",))
    with pytest.raises(KitError, match="only a 4-key model"):
        submission.write_submission(core_only, data_dir, out_dir)

    assert not out_dir.exists() or list(out_dir.iterdir()) == []


@needs_shared
def test_write_submission_after_a_real_cv_run(synth_competition, quick_run, tmp_path,
                                              monkeypatch):
    made, data_dir = synth_competition
    monkeypatch.setenv("KAGGLE_KEY", FAKE_KEY)
    written_report = json.loads((quick_run / "report.json").read_text())
    written = submission.write_submission(quick_run, data_dir, tmp_path / "submissions")
    assert written.rows == made["n_lookup_rows"] and written.run_id == quick_run.name
    assert written.sha256 == hashlib.sha256(written.csv_path.read_bytes()).hexdigest()
    assert float(score(written.csv_path, made["solution"])) == pytest.approx(
        validate.score(written.csv_path, made["solution"]), abs=1e-4)
    manifest_text = written.manifest_path.read_text()
    manifest = json.loads(manifest_text)
    assert manifest["config"] == json.loads((quick_run / "config.json").read_text())
    assert manifest["lb_estimate"] == written_report["leaderboard_estimate"]["rmse"]
    assert manifest["lb_estimate"] is not None
    assert manifest["core_choice"] == written_report["core_choice"]
    assert len(manifest["core_choice"]) == len(CORE_COLUMNS)
    assert FAKE_KEY not in manifest_text and FAKE_USER not in manifest_text
    again = submission.write_submission(quick_run, data_dir, tmp_path / "submissions",
                                        now=datetime.now(timezone.utc))
    assert again.csv_path.read_bytes() == written.csv_path.read_bytes()
