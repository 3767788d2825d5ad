"""kit.kaggle.client through the real kaggle client, against the loopback fake in fake_kaggle.py."""
import os

# KaggleApi decides where to connect when it is first imported, so this must come before
# anything imports it (kit.kaggle.client imports it lazily). See tests/fake_kaggle.py.
os.environ["KAGGLE_API_ENVIRONMENT"] = "LOCALHOST"

import base64
import io
import socket
import zipfile
from pathlib import Path

import pytest

from kit.config import COMPETITION
from kit.core.errors import KitError
from kit.kaggle import client, credentials
from tests.fake_kaggle import (
    FakeKaggle,
    install_proxy,
    isolated_kaggle_home,
    write_kaggle_json,
)

FAKE_USER = "fake-user"
FAKE_KEY = "fakekey0123456789abcdef"
FAKE_TOKEN = "KGAT_faketoken0123456789"
BASIC = "Basic " + base64.b64encode(f"{FAKE_USER}:{FAKE_KEY}".encode()).decode()
RULES_URL = f"https://www.kaggle.com/c/{COMPETITION}/rules"


def _make_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        # Random bytes span several of the client's 1 MiB chunks and defeat compression.
        archive.writestr("training.zip", os.urandom(1_500_000))
        archive.writestr("IdLookupTable.csv", "RowId,ImageId,FeatureName,Location\n")
    return buffer.getvalue()


ZIP = _make_zip()


@pytest.fixture
def home(tmp_path, monkeypatch):
    return isolated_kaggle_home(tmp_path, monkeypatch)


@pytest.fixture
def kaggle_json(home):
    return write_kaggle_json(home, FAKE_USER, FAKE_KEY)


@pytest.fixture
def server(kaggle_json, monkeypatch):
    with FakeKaggle(zip_bytes=ZIP) as fake:
        fake.install(monkeypatch)
        yield fake


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "submission.csv"
    path.write_bytes(b"RowId,Location\n1,66.0339\n2,39.0023\n")
    return path


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _assert_clean(error: KitError) -> None:
    text = str(error)
    assert FAKE_KEY not in text and FAKE_TOKEN not in text
    assert "\n" not in text


# ---- credentials --------------------------------------------------------------------------


def test_no_credentials_is_one_line_about_kaggle_json(home, capsys):
    assert credentials.credentials_source() is None
    with pytest.raises(KitError, match="no Kaggle credentials") as caught:
        client.download_competition(home / "raw")
    assert "kaggle.json" in str(caught.value) and "KAGGLE_USERNAME" in str(caught.value)
    assert capsys.readouterr().out == ""  # the client's help page never shows


def test_unreadable_kaggle_json_is_named(home):
    (home / "kaggle.json").write_text("{not json")
    with pytest.raises(KitError, match="not a readable kaggle.json"):
        client.make_api()


def test_credentials_source_follows_the_clients_order(kaggle_json, monkeypatch):
    assert credentials.credentials_source() == str(kaggle_json)
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", FAKE_KEY)
    assert credentials.credentials_source() == "KAGGLE_USERNAME/KAGGLE_KEY"
    monkeypatch.setenv("KAGGLE_API_TOKEN", FAKE_TOKEN)  # a token wins over the key pair
    assert credentials.credentials_source() == "KAGGLE_API_TOKEN"


def test_access_token_file_is_found_in_home(home):
    token_file = Path(os.environ["HOME"]) / ".kaggle" / "access_token"
    token_file.parent.mkdir()
    token_file.write_text(FAKE_TOKEN + "\n")
    assert credentials.credentials_source() == str(token_file)


def test_kaggle_json_warning_for_0644_not_for_0600(kaggle_json):
    assert credentials.kaggle_json_warning() is None
    kaggle_json.chmod(0o644)
    warning = credentials.kaggle_json_warning()
    assert warning is not None and "chmod 600" in warning and str(kaggle_json) in warning
    assert FAKE_KEY not in warning


def test_client_prints_nothing_even_for_a_readable_kaggle_json(server, kaggle_json, tmp_path,
                                                               capsys):
    kaggle_json.chmod(0o644)  # the client itself prints a warning for this
    client.download_competition(tmp_path / "raw", backoff=0)
    assert capsys.readouterr().out == ""


def test_token_is_sent_as_bearer(server, monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_API_TOKEN", FAKE_TOKEN)
    client.download_competition(tmp_path / "raw", backoff=0)
    assert server.count("IntrospectToken") >= 1
    assert server.authorizations[-1] == f"Bearer {FAKE_TOKEN}"


# ---- download -----------------------------------------------------------------------------


def test_download_arrives_byte_for_byte(server, tmp_path):
    dest = tmp_path / "raw"
    path = client.download_competition(dest, backoff=0)
    assert path == dest / f"{COMPETITION}.zip"
    assert path.read_bytes() == ZIP
    assert sorted(p.name for p in dest.iterdir()) == [path.name]  # no staging folder left
    assert server.bodies[0] == {"competitionName": COMPETITION}
    assert BASIC in server.authorizations


def test_existing_zip_is_kept_unless_forced(server, tmp_path):
    dest = tmp_path / "raw"
    dest.mkdir()
    (dest / f"{COMPETITION}.zip").write_bytes(b"old")
    client.download_competition(dest, backoff=0)
    assert server.calls == [] and (dest / f"{COMPETITION}.zip").read_bytes() == b"old"
    client.download_competition(dest, force=True, backoff=0)
    assert (dest / f"{COMPETITION}.zip").read_bytes() == ZIP


@pytest.mark.parametrize(
    ("status", "expected"),
    [(401, "rejected the credentials (401)"), (403, RULES_URL)],
)
def test_download_refusals_are_explained_and_not_retried(server, tmp_path, status, expected):
    server.fail("DownloadDataFiles", status)
    with pytest.raises(KitError) as caught:
        client.download_competition(tmp_path / "raw", retries=3, backoff=0)
    assert expected in str(caught.value)
    _assert_clean(caught.value)
    assert server.count("DownloadDataFiles") == 1


def test_401_names_where_the_key_came_from(server, kaggle_json, tmp_path):
    server.fail("DownloadDataFiles", 401)
    with pytest.raises(KitError, match="check the username and key in") as caught:
        client.download_competition(tmp_path / "raw", backoff=0)
    assert str(kaggle_json) in str(caught.value)


def test_unknown_competition_is_404(server, tmp_path):
    with pytest.raises(KitError, match="404") as caught:
        client.download_competition(tmp_path / "raw", competition="no-such-thing", backoff=0)
    assert "no-such-thing" in str(caught.value)
    assert server.count("DownloadDataFiles") == 1


def test_500_twice_then_success_is_retried_with_backoff(server, tmp_path):
    server.fail("DownloadDataFiles", 500, times=2)
    sleeps = []
    path = client.download_competition(tmp_path / "raw", retries=3, backoff=1.0,
                                          sleep=sleeps.append)
    assert path.read_bytes() == ZIP
    assert sleeps == [1.0, 2.0]
    assert server.count("DownloadDataFiles") == 3


def test_failed_file_fetch_after_redirect_is_retried(server, tmp_path):
    server.fail("File", 503, times=1)
    path = client.download_competition(tmp_path / "raw", backoff=0)
    assert path.read_bytes() == ZIP
    assert server.count("File") == 2


def test_persistent_500_gives_up_and_leaves_nothing(server, tmp_path):
    server.fail("DownloadDataFiles", 500)
    dest = tmp_path / "raw"
    with pytest.raises(KitError, match=r"server error \(500\).*3 attempts") as caught:
        client.download_competition(dest, retries=2, backoff=0)
    _assert_clean(caught.value)
    assert server.count("DownloadDataFiles") == 3
    assert list(dest.iterdir()) == []


def test_no_server_is_a_connection_error(kaggle_json, monkeypatch, tmp_path):
    install_proxy(monkeypatch, f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(KitError, match="could not reach Kaggle.*2 attempts") as caught:
        client.download_competition(tmp_path / "raw", retries=1, backoff=0)
    _assert_clean(caught.value)


def test_credentials_echoed_by_the_server_are_redacted(server, tmp_path):
    server.fail("DownloadDataFiles", 403, message=f"key {FAKE_KEY} and header {BASIC} refused")
    with pytest.raises(KitError) as caught:
        client.download_competition(tmp_path / "raw", backoff=0)
    _assert_clean(caught.value)
    assert "***" in str(caught.value)
    assert BASIC.split()[1] not in str(caught.value)


# ---- submit -------------------------------------------------------------------------------


def test_submit_uploads_the_file_byte_for_byte(server, csv_file):
    ref = client.submit(csv_file, "fold ensemble, flip TTA")
    assert ref == str(server.submissions[0].ref)
    (upload,) = server.uploads
    assert upload.data == csv_file.read_bytes()
    assert upload.file_name == csv_file.name
    assert server.submissions[0].description == "fold ensemble, flip TTA"
    assert set(server.authorizations) == {BASIC, None}  # the PUT to the upload URL is unsigned


@pytest.mark.parametrize(
    ("method", "status", "expected"),
    [
        ("StartSubmissionUpload", 401, "rejected the credentials (401)"),
        ("StartSubmissionUpload", 403, RULES_URL),
        ("CreateSubmission", 403, RULES_URL),
        ("CreateSubmission", 429, "submission limit reached for today"),
        ("CreateSubmission", 500, "server error (500)"),
        ("Upload", 500, "uploading"),
    ],
)
def test_submit_failures_are_explained_and_not_retried(server, csv_file, method, status,
                                                       expected):
    server.fail(method, status)
    with pytest.raises(KitError) as caught:
        client.submit(csv_file, "message")
    assert expected in str(caught.value)
    _assert_clean(caught.value)
    assert server.count(method) == 1
    assert server.submissions == []


def test_submit_missing_file(server, tmp_path):
    with pytest.raises(KitError, match="no such submission file"):
        client.submit(tmp_path / "absent.csv", "message")
    assert server.calls == []


# ---- scores -------------------------------------------------------------------------------


def test_list_submissions_gives_plain_dicts_newest_first(server):
    server.add_submission("old.csv", "first")
    server.add_submission("new.csv", "second", publicScore="", privateScore="")
    listed = client.list_submissions(backoff=0)
    assert [s["file_name"] for s in listed] == ["new.csv", "old.csv"]
    assert set(listed[0]) == {"ref", "file_name", "date", "description", "status",
                              "public_score", "private_score", "error_description"}
    assert listed[0]["public_score"] is None  # an empty score string means not scored
    assert listed[1] == {
        "ref": server.submissions[1].ref, "file_name": "old.csv",
        "date": "2024-05-01T12:00:00+00:00", "description": "first", "status": "COMPLETE",
        "public_score": 2.71828, "private_score": 3.14159, "error_description": "",
    }


def test_wait_for_score_returns_after_pending_polls(server, csv_file):
    server.pending_polls = 2
    ref = client.submit(csv_file, "message")
    sleeps = []
    result = client.wait_for_score(ref, poll=5, sleep=sleeps.append)
    assert result is not None and result["status"] == "COMPLETE"
    assert str(result["ref"]) == ref
    assert result["public_score"] == pytest.approx(2.71828)
    assert server.count("ListSubmissions") == 3
    assert sleeps == [5, 5]


def test_wait_for_score_by_file_name_takes_the_newest(server):
    server.add_submission("a.csv")
    newest = server.add_submission("a.csv")
    server.add_submission("b.csv")
    result = client.wait_for_score("submissions/a.csv", poll=0, sleep=lambda _: None)
    assert result["ref"] == newest


def test_wait_for_score_reports_errors(server):
    server.final_status = "ERROR"
    server.error_description = "Submission must have 27124 rows"
    ref = server.add_submission("bad.csv")
    result = client.wait_for_score(ref, poll=0, sleep=lambda _: None)
    assert result["status"] == "ERROR"
    assert result["error_description"] == "Submission must have 27124 rows"
    assert result["public_score"] is None


def test_wait_for_score_times_out(server):
    server.pending_polls = 10**6
    ref = server.add_submission("slow.csv")
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    result = client.wait_for_score(ref, timeout=30, poll=10, clock=lambda: now[0], sleep=sleep)
    assert result is None
    assert now[0] == 30
    assert server.count("ListSubmissions") == 4


def test_what_the_client_prints_on_either_stream_is_kept_redacted(kaggle_json, capfd):
    import sys

    with client.captured_output() as printed:
        print(f"\x1b[33mkey {FAKE_KEY}\x1b[0m")
        print("  a warning on stderr  ", file=sys.stderr)
    assert printed.lines() == ["key ***", "a warning on stderr"]
    assert capfd.readouterr() == ("", "")
