"""End to end on the practice competition in ../shared, through make as a user runs it:
download from the archive, a tiny cv run, `make submit DRY_RUN=1`, and the independent
scorer accepts the file."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED, SMALL_NETWORK
from tests.helpers import one_device_environment

REPO = Path(__file__).resolve().parents[1]
PRACTICE = SHARED / "data" / "practice"
SCORER = SHARED / "tools" / "score.py"

pytestmark = pytest.mark.skipif(
    not (PRACTICE / "facial-keypoints-detection.zip").exists() or shutil.which("make") is None,
    reason=f"needs the practice competition at {PRACTICE} (../shared) and make",
)


def make(*args: str, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(["make", "-s", *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


@pytest.mark.slow
def test_practice_download_tiny_cv_submit_dry_run_and_score(tmp_path):
    env = dict(one_device_environment(), KIT_DATA=str(tmp_path / "data"),
               KIT_RUNS=str(tmp_path / "cv"), KIT_SUBMISSIONS=str(tmp_path / "submissions"))
    make("download", f"ARCHIVE={PRACTICE / 'facial-keypoints-detection.zip'}", env=env)
    assert (tmp_path / "data" / "training.csv").exists()
    make("cv", "PRESET=quick", "EPOCHS=1", "FOLDS=2", f"SET={' '.join(SMALL_NETWORK)}", env=env)
    assert (tmp_path / "cv" / "latest" / "report.json").exists()
    make("submit", "DRY_RUN=1", env=env)
    written = sorted((tmp_path / "submissions").glob("*.csv"))
    assert len(written) == 1 and not (tmp_path / "submissions" / "ledger.csv").exists()
    scored = subprocess.run([sys.executable, str(SCORER), str(written[0]),
                             str(PRACTICE / "solution.csv")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert scored.returncode == 0, scored.stdout + scored.stderr
    assert 0.0 < float(scored.stdout) < 48.0
