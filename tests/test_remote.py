"""Remote runs (`cv --remote kaggle`, `remote attach`, `remote list`) through the real kaggle
client against the loopback fake in fake_kaggle.py, whose kernels really run what is pushed."""
import os

# KaggleApi decides where to connect when it is first imported, so this must come before
# anything imports it (kit.kaggle.client imports it lazily). See tests/fake_kaggle.py.
os.environ["KAGGLE_API_ENVIRONMENT"] = "LOCALHOST"

import ast
import base64
import io
import json
import re
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from kit.cli import main as cli
from kit.config import COMPETITION
from kit.core import source
from kit.core.errors import KitError
from kit.data import download
from kit.kaggle import client, kernel_api, kernel_setup, places
from kit.remote import code, kernels
from tests.conftest import SMALL_NETWORK, refusal
from tests.fake_kaggle import FakeKaggle, isolated_kaggle_home
from tests.helpers import set_flags

FAKE_USER = "fake-user"
FAKE_KEY = "remotekey0123456789abcdef"
BASIC = base64.b64encode(f"{FAKE_USER}:{FAKE_KEY}".encode()).decode()
RUN = "20240501-120000-quick"


@pytest.fixture
def credentials(tmp_path, monkeypatch):
    """Fake credentials in the environment (where a leak would come from), no user folders,
    and this side is a laptop, not Kaggle."""
    isolated_kaggle_home(tmp_path, monkeypatch)
    monkeypatch.setenv("KAGGLE_USERNAME", FAKE_USER)
    monkeypatch.setenv("KAGGLE_KEY", FAKE_KEY)
    for name in ("KIT_DATA", "KIT_RUNS", "KIT_SUBMISSIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(places.ROOT_VARIABLE, str(tmp_path / "not-kaggle"))


@pytest.fixture
def runs(tmp_path) -> Path:
    return tmp_path / "cv"


def scripted(monkeypatch, statuses, files=None, log="", **options) -> FakeKaggle:
    """A started fake whose kernels answer `statuses` in turn instead of running."""
    fake = FakeKaggle(kernel_statuses=statuses, kernel_files=files or {}, kernel_log=log,
                      **options).start()
    fake.install(monkeypatch)
    return fake


def run_files(name: str = RUN) -> dict[str, bytes]:
    """What a finished kernel leaves in /kaggle/working: one run folder (a stand-in)."""
    return {f"cv/{name}/config.json": b'{"preset": "quick"}',
            f"cv/{name}/folds/15-0/oof.npz": b"weights",
            f"cv/{name}/oof.csv": b"subset,fold\n",
            f"cv/{name}/folds.json": b"{}"}


def kaggle_log(*lines: str) -> str:
    return json.dumps([{"stream_name": "stdout", "time": float(i), "data": line + "\n"}
                       for i, line in enumerate(lines)])


def entry_for(kernel: str, **fields) -> dict:
    return {"id": kernel.split("kit-cv-")[-1], "kernel": kernel, "pushed": kernels._now(),
            "status": "QUEUED", "failure": "", "timeout": None, **fields}


def no_sleep(seconds: float) -> None:
    pass


# ---------------------------------------------------------------- the pushed code


def test_cv_flags_keep_every_cv_flag_and_drop_the_remote_ones():
    from kit.cli import remote_verbs

    argv = ["--debug", "--runs", "x", "cv", "--preset", "quick", "--remote", "kaggle", "--set",
            "train.learning_rate=0.002", "--public", "--epochs", "3", "--timeout=900",
            "--poll", "1", "--no-internet", "--no-resume", "--accelerator", "none", "--no-wait"]
    assert code.cv_flags(argv, remote_verbs.add_cv_flags) == [
        "--preset", "quick", "--set", "train.learning_rate=0.002", "--epochs", "3",
        "--no-resume"]


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                   cwd=root, check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A small git checkout shaped like this one."""
    root = tmp_path / "checkout"
    (root / "kit").mkdir(parents=True)
    (root / "kit" / "__init__.py").write_text("")
    (root / "kit" / "a.py").write_text("A = 1\n")
    (root / "pyproject.toml").write_text('[project]\ndependencies = ["numpy>=1"]\n')
    (root / ".gitignore").write_text("*.log\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "one")
    return root


def untar(bundle: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers()}


def test_the_code_is_the_working_tree_with_its_commit_and_changes(checkout, credentials):
    clean = code.collect_code(checkout)
    assert clean.files == ("kit/__init__.py", "kit/a.py", "pyproject.toml")
    assert re.fullmatch(r"[0-9a-f]{40}", clean.commit) and clean.changed == ()
    assert source.commit(checkout) == clean.commit
    assert source.commit(checkout.parent) is None  # no checkout there
    assert code.collect_code(checkout).sha256 == clean.sha256  # the same code, the same bytes

    (checkout / "kit" / "a.py").write_text("A = 2\n")  # saved but not committed
    (checkout / "kit" / "new.py").write_text("B = 1\n")  # untracked, not ignored
    (checkout / "kit" / "debug.log").write_text("ignored\n")
    (checkout / "notes.txt").write_text("not kit code\n")
    dirty = code.collect_code(checkout)
    assert dirty.files == ("kit/__init__.py", "kit/a.py", "kit/new.py", "pyproject.toml")
    assert dirty.changed == ("kit/a.py", "kit/new.py") and dirty.commit == clean.commit
    assert "dirty: 2 changed files" in dirty.source
    assert untar(dirty.bundle)["kit/a.py"] == b"A = 2\n"


def test_code_holding_a_credential_is_never_pushed(checkout, credentials):
    (checkout / "kit" / "settings.py").write_text(f'KEY = "{FAKE_KEY}"\n')
    with pytest.raises(KitError, match=r"settings\.py: holds one of your Kaggle credentials"):
        code.collect_code(checkout)


def test_the_script_unpacks_the_code_and_installs_only_what_is_missing(checkout, tmp_path,
                                                                      credentials):
    pushed = code.collect_code(checkout)
    script = code.script_text(pushed, ["--preset", "quick"])
    names = {node.targets[0].id: ast.literal_eval(node.value)
             for node in ast.parse(script).body if isinstance(node, ast.Assign)
             and node.targets[0].id in ("SOURCE", "CV_ARGS", "BUNDLE")}
    assert names["CV_ARGS"] == ["--preset", "quick"] and names["SOURCE"] == pushed.source
    unpacked = kernel_setup.unpack_code(names["BUNDLE"], tmp_path / "code")
    assert (unpacked / "kit" / "a.py").read_text() == "A = 1\n"
    assert kernel_setup.requirements(unpacked / "pyproject.toml") == ["numpy>=1"]
    assert kernel_setup.missing(["numpy>=1", "kit-surely-not-installed>=1"]) == [
        "kit-surely-not-installed>=1"]


@pytest.mark.parametrize("returncode", [0, 1])
def test_installing_pins_everything_the_image_has(tmp_path, monkeypatch, returncode):
    import importlib.metadata

    commands = []

    def pip(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(command, returncode, "", "ERROR: no network\n")

    monkeypatch.setattr(kernel_setup.subprocess, "run", pip)
    if returncode:
        with pytest.raises(SystemExit, match=r"could not install dm-pix.*no network.*internet"):
            kernel_setup.install(["dm-pix>=0.4"], tmp_path)
    else:
        kernel_setup.install(["dm-pix>=0.4"], tmp_path)
    (command,) = commands
    assert command[1:4] == ["-m", "pip", "install"] and command[-1] == "dm-pix>=0.4"
    pins = (tmp_path / "kit-constraints.txt").read_text().splitlines()
    assert command[command.index("-c") + 1] == str(tmp_path / "kit-constraints.txt")
    assert f"jax=={importlib.metadata.version('jax')}" in pins  # the image's jax stays


def test_a_bundle_that_would_write_outside_its_folder_is_refused(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("../escape.py")
        archive.addfile(info, io.BytesIO(b""))
    with pytest.raises(SystemExit, match="bad member '../escape.py'"):
        kernel_setup.unpack_code(base64.b64encode(buffer.getvalue()).decode(), tmp_path / "c")
    assert not (tmp_path / "escape.py").exists()


# ---------------------------------------------------------------- status, log, failures


def test_log_lines_reads_kaggle_json_logs_and_plain_text():
    entries = [{"stream_name": "stdout", "time": 1.0, "data": "one\ntw"},
               {"stream_name": "stderr", "time": 2.0, "data": "o\n\x1b[32mgreen\x1b[0m\n"},
               {"stream_name": "stdout", "time": 3.0, "data": "10%\r50%\r100%\n\n"}]
    assert kernels.log_lines(json.dumps(entries)) == ["one", "two", "green", "100%"]
    assert kernels.log_lines("plain\nlines\n") == ["plain", "lines"]
    assert kernels.log_lines("") == []


def test_wait_polls_until_the_kernel_stops_and_reports_every_poll(runs, credentials,
                                                                  monkeypatch):
    log = kaggle_log("epoch 1", "epoch 2", "done")
    fake = scripted(monkeypatch, [("QUEUED", ""), ("QUEUED", ""), ("RUNNING", ""),
                                  ("RUNNING", ""), ("COMPLETE", "")], log=log)
    try:
        fake.kernels["me/kit-cv-1"] = _scripted_run(fake, "me/kit-cv-1")
        entry = entry_for("me/kit-cv-1", pushed="2024-05-01T12:00:00+00:00")
        updates, slept = [], []
        clock = iter(range(1_714_564_800 + 5, 1_714_564_800 + 500, 60))
        status, message, lines = kernels.wait(runs, entry, poll=7, on_update=updates.append,
                                             now=lambda: next(clock), sleep=slept.append)
    finally:
        fake.stop()
    assert (status, message, lines) == ("COMPLETE", "", ["epoch 1", "epoch 2", "done"])
    assert [u.status for u in updates] == ["QUEUED", "QUEUED", "RUNNING", "RUNNING", "COMPLETE"]
    assert [u.elapsed for u in updates] == [65, 125, 185, 245, 305]  # the first read: the deadline
    assert updates[0].log_tail == () and updates[2].log_tail == ("epoch 1", "epoch 2", "done")
    assert slept == [7, 7, 7, 7]
    saved = json.loads((runs / ".remote" / "1.json").read_text())
    assert saved["status"] == "COMPLETE" and saved["started"] and saved["finished"]


def test_waiting_without_a_terminal_prints_changes_and_a_heartbeat():
    from rich.console import Console

    from kit.cli import remote_verbs

    out = io.StringIO()
    console = Console(file=out, force_terminal=False, force_jupyter=False, width=200)
    polls = [("QUEUED", 5, ()), ("QUEUED", 65, ()), ("RUNNING", 125, ("epoch 1",)),
             ("RUNNING", 200, ("epoch 2",)), ("RUNNING", 500, ("[kit 14:31:04] epoch 9",)),
             ("COMPLETE", 560, ("epoch 9", "done"))]
    with remote_verbs._Watch(console, {"kernel": "me/kit-cv-1"}) as watch:
        for status, elapsed, tail in polls:
            watch(kernels.Update(status, elapsed, tail))
    assert out.getvalue().splitlines() == [
        "me/kit-cv-1: QUEUED, 0:05 since the push",
        "me/kit-cv-1: RUNNING, 2:05 since the push | epoch 1",
        "me/kit-cv-1: RUNNING, 8:20 since the push | [kit 14:31:04] epoch 9",  # a heartbeat
        "me/kit-cv-1: COMPLETE, 9:20 since the push | done"]


def test_waiting_in_a_terminal_is_live_and_keeps_each_change_of_status():
    from rich.console import Console

    from kit.cli import remote_verbs

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    with remote_verbs._Watch(console, {"kernel": "me/kit-cv-1"}) as watch:
        assert watch.live is not None
        watch(kernels.Update("RUNNING", 65, ("epoch 1", "epoch 2")))
        watch(kernels.Update("RUNNING", 95, ("epoch 3",)))
    text = kernels.ANSI.sub("", out.getvalue())
    assert text.count("me/kit-cv-1: RUNNING, 1:05 since the push") >= 1
    assert "1:35 since the push" not in text.split("\n")[0]


@pytest.mark.parametrize("status, message, expected", [
    ("ERROR", "Your notebook hit an unhandled error", ("failed (ERROR: Your notebook hit an "
     "unhandled error); last log lines: b | c | ValueError: boom; full log: ")),
    ("ERROR", "The session exceeded the max allowed execution duration", ("ran out of time: "
     "Kaggle stopped it at its limit of 600 s (--timeout)")),
    ("CANCEL_ACKNOWLEDGED", "", "was cancelled (CANCEL_ACKNOWLEDGED)"),
])
def test_a_kernel_that_stops_without_a_run_is_one_line(runs, status, message, expected):
    entry = entry_for("me/kit-cv-1", timeout=600)
    lines = ["a", "b", "c", "ValueError: boom"]
    error = kernels.failure(entry, status, message, lines, kernels.save_log(runs, entry, lines))
    assert expected in str(error) and "\n" not in str(error)
    assert (runs / ".remote" / "1.log").read_text().splitlines() == lines


def test_find_entry_by_id_kernel_or_run_and_the_newest_waiting_by_default(runs):
    for stamp, run in (("20240101-000000-quick", "r1"), ("20240102-000000-quick", None),
                       ("20240103-000000-quick", "r3")):
        kernels.save_entry(runs, {**entry_for(f"me/kit-cv-{stamp}"), "run": run})
    assert kernels.find_entry(runs)["id"] == "20240102-000000-quick"
    assert kernels.find_entry(runs, "r1")["id"] == "20240101-000000-quick"
    assert kernels.find_entry(runs, "kit-cv-20240103-000000-quick")["run"] == "r3"
    assert kernels.find_entry(runs, "me/kit-cv-20240101-000000-quick")["run"] == "r1"
    with pytest.raises(KitError, match="no remote run 'nope'"):
        kernels.find_entry(runs, "nope")
    with pytest.raises(KitError, match="no remote runs yet"):
        kernels.find_entry(runs.parent / "empty")


# ---------------------------------------------------------------- through the client


def test_push_sends_a_private_gpu_script_kernel_with_the_competition(runs, credentials,
                                                                     monkeypatch):
    fake = scripted(monkeypatch, [("QUEUED", "")])
    try:
        entry = kernels.push(runs, ["--preset", "quick"], "quick", kernels.KernelOptions())
        body = fake.kernel().body
    finally:
        fake.stop()
    assert entry["kernel"] == f"{FAKE_USER}/kit-cv-{entry['id']}" and entry["version"] == 1
    assert body["slug"] == entry["kernel"] and body["newTitle"] == f"kit cv {entry['id']}"
    assert body["language"] == "python" and body["kernelType"] == "script"
    assert body["isPrivate"] is True and body["enableGpu"] is True
    assert body["enableInternet"] is True and body["machineShape"] == "NvidiaTeslaT4"
    assert body["competitionDataSources"] == [COMPETITION]
    assert "sessionTimeoutSeconds" not in body
    assert "BUNDLE = " in body["text"] and "def run_remote_cv" in body["text"]
    assert FAKE_KEY not in body["text"] and BASIC not in body["text"]
    saved = json.loads((runs / ".remote" / f"{entry['id']}.json").read_text())
    assert saved == entry and saved["code_sha256"] and isinstance(saved["dirty"], bool)


def test_kernel_options_public_cpu_offline_timeout(runs, credentials, monkeypatch):
    fake = scripted(monkeypatch, [("QUEUED", "")])
    options = kernels.KernelOptions(public=True, accelerator="none", internet=False, timeout=900)
    try:
        kernels.push(runs, [], "default", options)
        body = fake.kernel().body
    finally:
        fake.stop()
    assert body["isPrivate"] is False and body["enableGpu"] is False
    assert body["enableInternet"] is False and body["sessionTimeoutSeconds"] == 900
    assert body.get("machineShape") in (None, "")


@pytest.mark.parametrize("setup, expected", [
    ({"push_error": "Maximum weekly GPU quota of 30.00 hours reached."},
     "no GPU quota left (Kaggle: Maximum weekly GPU quota of 30.00 hours reached.)"),
    ({"push_error": "Maximum batch GPU session count of 2 reached"}, "too many kernels running"),
    ({"fail": ("SaveKernel", 401)}, "Kaggle rejected the credentials (401)"),
    ({"fail": ("SaveKernel", 403)}, "accept the rules at https://www.kaggle.com/c/"),
    ({"fail": ("SaveKernel", 429)}, "Kaggle is limiting requests (429)"),
])
def test_a_refused_push_is_one_clear_line(runs, credentials, monkeypatch, setup, expected):
    fail = setup.pop("fail", None)
    fake = scripted(monkeypatch, [("QUEUED", "")], **setup)
    if fail:
        fake.fail(*fail)
    try:
        with pytest.raises(KitError) as raised:
            kernels.push(runs, [], "quick", kernels.KernelOptions())
    finally:
        fake.stop()
    assert expected in str(raised.value) and "\n" not in str(raised.value)
    assert FAKE_KEY not in str(raised.value) and not list(runs.glob(".remote/*.json"))


@pytest.mark.parametrize("times, outcome", [(2, "RUNNING"), (None, "(429)")])
def test_status_retries_429_then_says_it_in_one_line(credentials, monkeypatch, times, outcome):
    fake = scripted(monkeypatch, [("RUNNING", "")])
    try:
        fake.kernels["me/kit-cv-1"] = _scripted_run(fake, "me/kit-cv-1")
        fake.fail("GetKernelSessionStatus", 429, times=times)
        slept = []
        if times:
            assert kernel_api.kernel_status("me/kit-cv-1", sleep=slept.append) == ("RUNNING", "")
            assert slept == [2.0, 4.0]
        else:
            with pytest.raises(KitError, match=r"limiting requests \(429\).*\(5 attempts\)"):
                kernel_api.kernel_status("me/kit-cv-1", sleep=slept.append)
    finally:
        fake.stop()


def _scripted_run(fake: FakeKaggle, ref: str):
    from tests.fake_kaggle import KernelRun

    return KernelRun(ref, 1, {}, scripted=list(fake.kernel_statuses))


@pytest.mark.parametrize("method, status, expected", [
    ("GetKernelSessionStatus", 401, "Kaggle denied access to kernel me/kit-cv-1 (401/403)"),
    ("GetKernelSessionStatus", 403, "Kaggle denied access to kernel me/kit-cv-1 (401/403)"),
    ("GetKernelSessionStatus", 404, "Kaggle knows no kernel me/kit-cv-1 (404)"),
    ("ListKernelSessionOutput", 403, "Kaggle denied access to kernel me/kit-cv-1 (401/403)"),
])
def test_status_and_output_refusals_are_one_line(tmp_path, credentials, monkeypatch, method,
                                                 status, expected):
    fake = scripted(monkeypatch, [("COMPLETE", "")])
    try:
        fake.kernels["me/kit-cv-1"] = _scripted_run(fake, "me/kit-cv-1")
        fake.fail(method, status)
        with pytest.raises(KitError) as raised:
            if method == "GetKernelSessionStatus":
                kernel_api.kernel_status("me/kit-cv-1", sleep=no_sleep)
            else:
                kernel_api.download_kernel_output("me/kit-cv-1", tmp_path / "out", sleep=no_sleep)
    finally:
        fake.stop()
    assert expected in str(raised.value) and "\n" not in str(raised.value)


def test_a_completed_kernel_comes_back_laid_out_as_a_local_run(runs, credentials, monkeypatch):
    log = kaggle_log("[kit] running", "epoch 1/1 train 3.0 val 2.0")
    fake = scripted(monkeypatch, [("QUEUED", ""), ("RUNNING", ""), ("COMPLETE", "")],
                    files=run_files(), log=log, output_page_size=2)
    try:
        entry = kernels.push(runs, ["--preset", "quick"], "quick", kernels.KernelOptions())
        status, _, lines = kernels.wait(runs, entry, poll=0, sleep=no_sleep)
        run_dir = kernels.fetch(runs, entry)
    finally:
        fake.stop()
    assert status == "COMPLETE" and lines[-1] == "epoch 1/1 train 3.0 val 2.0"
    assert run_dir == runs / RUN and (runs / "latest").resolve() == run_dir
    for name, content in run_files().items():
        assert (runs / name.removeprefix("cv/")).read_bytes() == content
    assert fake.count("ListKernelSessionOutput") >= 2  # 4 files, 2 a page
    assert (run_dir / "kernel.log").read_text().splitlines()[-1] == lines[-1]
    stored = json.loads((run_dir / "remote.json").read_text())
    assert stored["kernel"] == entry["kernel"] and stored["run"] == RUN
    assert stored["commit"] == entry["commit"] and stored["version"] == 1
    assert not list((runs / ".remote").glob("*.download"))


def test_outputs_holding_a_credential_are_not_copied(runs, credentials, monkeypatch):
    files = {**run_files(), f"cv/{RUN}/env.txt": f"KAGGLE_KEY={FAKE_KEY}".encode()}
    fake = scripted(monkeypatch, [("COMPLETE", "")], files=files)
    try:
        entry = kernels.push(runs, [], "quick", kernels.KernelOptions())
        with pytest.raises(KitError, match="env.txt holds one of your Kaggle credentials"):
            kernels.fetch(runs, entry)
    finally:
        fake.stop()
    assert not (runs / RUN).exists() and not list((runs / ".remote").glob("*.download"))


def test_an_error_kernel_is_one_line_with_its_message_and_last_log_lines(runs, credentials,
                                                                         monkeypatch, capsys):
    log = kaggle_log("Traceback (most recent call last):", '  File "x.py", line 1',
                     "ValueError: boom")
    fake = scripted(monkeypatch, [("RUNNING", ""), ("ERROR", "Your notebook hit an error.")],
                    log=log)
    try:
        code = cli.main(["--runs", str(runs), "cv", "--preset", "quick", "--remote", "kaggle",
                         "--poll", "0"])
    finally:
        fake.stop()
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0, err
    assert "failed (ERROR: Your notebook hit an error.)" in err and "ValueError: boom" in err
    entry = kernels.find_entry(runs)
    assert entry["status"] == "ERROR" and (runs / ".remote" / f"{entry['id']}.log").is_file()


def test_a_kernel_past_its_timeout_is_stopped_and_said_so(tmp_path, runs, credentials,
                                                          monkeypatch):
    folder = tmp_path / "kernel"
    folder.mkdir()
    options = kernels.KernelOptions(accelerator="none", timeout=1)
    kernels.write_kernel_folder(folder, f"{FAKE_USER}/kit-cv-sleepy",
                               "import time\nprint('sleeping', flush=True)\ntime.sleep(60)\n",
                               options)
    with FakeKaggle(kernel_home=tmp_path / "kaggle", queued_polls=0) as fake:
        fake.install(monkeypatch)
        pushed = kernel_api.push_kernel(folder, timeout=1)
        entry = entry_for(f"{FAKE_USER}/kit-cv-sleepy", timeout=1, version=pushed["version"])
        status, message, lines = kernels.wait(runs, entry, poll=0.2)
    assert status == "ERROR" and lines == ["sleeping"]
    assert "ran out of time: Kaggle stopped it at its limit of 1 s" in str(
        kernels.failure(entry, status, message, lines, None))


def test_ctrl_c_stops_waiting_not_the_kernel_and_attach_downloads_later(runs, credentials,
                                                                         monkeypatch, capsys):
    fake = scripted(monkeypatch, [("RUNNING", ""), ("RUNNING", ""), ("COMPLETE", "")],
                    files=run_files())
    real_status = kernel_api.kernel_status
    calls = []

    def interrupted(kernel, api=None, **kwargs):
        calls.append(kernel)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_status(kernel, api, **kwargs)

    try:
        with monkeypatch.context() as patch:
            patch.setattr(kernel_api, "kernel_status", interrupted)
            with pytest.raises(SystemExit) as stopped:
                cli.main(["--runs", str(runs), "cv", "--preset", "quick", "--remote", "kaggle",
                          "--poll", "0"])
        assert stopped.value.code == 130
        out = capsys.readouterr().out
        entry = kernels.find_entry(runs)
        assert f"`python -m kit remote attach {entry['id']}`" in out
        assert entry["status"] == "RUNNING" and not entry["run"]
        assert set(fake.calls) <= {"GetAcceleratorQuotaStatistics", "SaveKernel",
                                   "GetKernelSessionStatus",
                                   "ListKernelSessionOutput"}  # nothing cancelled it

        assert cli.main(["--runs", str(runs), "remote", "list"]) == 0
        listed = capsys.readouterr().out
        assert entry["id"] in listed and "RUNNING" in listed

        assert cli.main(["--runs", str(runs), "remote", "attach", "--poll", "0"]) == 0
        assert f"run {runs / RUN}" in capsys.readouterr().out
        assert cli.main(["--runs", str(runs), "remote", "attach", entry["id"]]) == 0
        assert "already downloaded" in capsys.readouterr().out
        assert cli.main(["--runs", str(runs), "remote", "list"]) == 0
        assert RUN in capsys.readouterr().out
    finally:
        fake.stop()


def test_remote_list_without_credentials_shows_the_states_last_seen(runs, tmp_path,
                                                                    monkeypatch, capsys):
    isolated_kaggle_home(tmp_path, monkeypatch)
    kernels.save_entry(runs, {**entry_for("me/kit-cv-20240101-000000-quick"),
                             "status": "RUNNING"})
    assert cli.main(["--runs", str(runs), "remote", "list"]) == 0
    captured = capsys.readouterr()
    assert "states as last seen: no Kaggle credentials" in captured.err
    assert "20240101-000000-quick" in captured.out and "RUNNING" in captured.out


# ---------------------------------------------------------------- end to end


def snapshot_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.slow
def test_remote_cv_runs_the_pushed_code_and_comes_back_as_a_submittable_run(
        tmp_path, runs, credentials, monkeypatch, capsys, synth_competition):
    made, _ = synth_competition  # a competition in Kaggle's layout, small enough for seconds
    competition = tmp_path / "competition"  # what Kaggle mounts at /kaggle/input/<competition>
    with zipfile.ZipFile(made["archive"]) as archive:
        archive.extractall(competition)
    mounted = snapshot_bytes(competition)
    with FakeKaggle(competition_files=competition, kernel_home=tmp_path / "kaggle") as fake:
        fake.install(monkeypatch)
        code = cli.main(["--runs", str(runs), "cv", "--preset", "quick", "--folds", "2",
                         "--epochs", "1", *set_flags(SMALL_NETWORK), "--remote", "kaggle",
                         "--poll", "0.5"])
        kernel = fake.wait_for_kernel()
    out = capsys.readouterr().out
    log = "".join(entry["data"] for entry in kernel.log_entries)
    assert code == 0, out[-3000:] + log[-3000:]

    # The kernel: the pushed code ran in notebook mode on the mounted competition.
    body = kernel.body
    assert body["isPrivate"] is True and body["enableGpu"] is True
    assert body["competitionDataSources"] == [COMPETITION]
    assert f"ready {kernel.root / 'temp' / 'kit-data'}/ from" in log
    assert "--preset quick --folds 2 --epochs 1" in log and "--remote" not in log
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):  # imported from the bundle, not here
        assert (kernel.root / "temp" / "kit-code" / "kit" / "__pycache__").is_dir()
    assert snapshot_bytes(competition) == mounted  # nothing written under input/
    assert sorted(p.name for p in (kernel.root / "working").iterdir()) == ["cv"]
    assert list((kernel.root / "temp" / "kit-data" / "cache").glob("*.npz"))

    # Back here: a run laid out as a local one, with where it came from.
    run_dir = (runs / "latest").resolve()
    assert (run_dir / "report.json").is_file() and (run_dir / "oof.csv").is_file()
    assert f"run {run_dir} from {FAKE_USER}/kit-cv-" in out
    stored = json.loads((run_dir / "remote.json").read_text())
    assert stored["kernel"] == body["slug"] and stored["version"] == 1
    assert isinstance(stored["dirty"], bool) and stored["code_sha256"]
    assert "epoch 1/1" in (run_dir / "kernel.log").read_text()

    # No credential in the pushed code (the script and every bundled file), the log, or cv/.
    pushed = [body["text"].encode()]
    bundle = re.search(r"^BUNDLE = '([^']+)'$", body["text"], re.MULTILINE).group(1)
    pushed += untar(base64.b64decode(bundle)).values()
    for content in [*pushed, log.encode(), *snapshot_bytes(runs).values()]:
        assert FAKE_KEY.encode() not in content and BASIC.encode() not in content

    # `make submit DRY_RUN=1` on it, unchanged.
    data_dir = tmp_path / "data"
    download.download(data_dir, archive=made["archive"])
    out_dir = tmp_path / "submissions"
    assert cli.main(["--data", str(data_dir), "--runs", str(runs), "submit", "--dry-run",
                     "--out", str(out_dir), "--solution", str(made["solution"])]) == 0
    written = sorted(out_dir.glob("*.csv"))
    assert len(written) == 1 and "dry run: not uploaded" in capsys.readouterr().out
    assert written[0].read_text().startswith("RowId,Location\n")


# ---------------------------------------------------------------- every client, quota, waits


def _client_has(name: str) -> bool:
    from kaggle.api import kaggle_api_extended

    return hasattr(kaggle_api_extended.KaggleApi, name) or hasattr(kaggle_api_extended, name)


def test_a_client_that_cannot_choose_the_accelerator_says_which_one_can(tmp_path, credentials,
                                                                        monkeypatch):
    fake = scripted(monkeypatch, [("QUEUED", "")])
    folder = tmp_path / "kernel"
    folder.mkdir()
    try:
        api = client.make_api()
        real_push = api.kernels_push

        def kernels_push(folder, timeout=None):  # the signature of kaggle 1.7.x to 1.8.3
            return real_push(folder, timeout)

        api.kernels_push = kernels_push
        kernels.write_kernel_folder(folder, f"{FAKE_USER}/kit-cv-old", "print(1)\n",
                                    kernels.KernelOptions())
        message = refusal(lambda: kernel_api.push_kernel(folder, accelerator="NvidiaTeslaT4",
                                                         api=api))
        assert fake.count("SaveKernel") == 0
        kernels.write_kernel_folder(folder, f"{FAKE_USER}/kit-cv-old", "print(1)\n",
                                    kernels.KernelOptions(accelerator="none"))
        pushed = kernel_api.push_kernel(folder, accelerator=None, api=api)  # a CPU run needs none
        body = fake.kernel().body
    finally:
        fake.stop()
    assert "cannot choose a kernel's accelerator (NvidiaTeslaT4)" in message
    assert "pip install -U 'kaggle>=1.8.4'" in message
    assert pushed["version"] == 1 and body["enableGpu"] is False


@pytest.mark.skipif(not _client_has("quota_view"), reason="this kaggle client cannot tell")
@pytest.mark.parametrize("used_hours, outcome", [(1.0, "pushed"), (30.0, "refused")])
def test_the_gpu_quota_left_is_shown_before_a_push_and_none_left_stops_it(
        runs, credentials, monkeypatch, capsys, used_hours, outcome):
    fake = scripted(monkeypatch, [("QUEUED", "")], gpu_quota=(used_hours * 3600, 30 * 3600))
    try:
        code_ = cli.main(["--runs", str(runs), "cv", "--preset", "quick", "--remote", "kaggle",
                          "--no-wait"])
    finally:
        fake.stop()
    captured = capsys.readouterr()
    assert fake.count("GetAcceleratorQuotaStatistics") == 1
    if outcome == "pushed":
        assert code_ == 0 and fake.count("SaveKernel") == 1
        line = ("GPU quota: 29.0 h left of 30.0 h this week; Kaggle refreshes it "
                "2024-05-06 00:00 UTC")
        assert line in captured.out
        assert captured.out.index(line) < captured.out.index("pushed ")
    else:
        err = captured.err.strip()
        assert code_ == 1 and fake.count("SaveKernel") == 0 and "\n" not in err
        assert "no GPU quota left (GPU quota: 0.0 h left of 30.0 h this week" in err
        assert "--accelerator none; nothing was pushed" in err
        assert not list(runs.glob(".remote/*.json"))


def test_where_the_quota_cannot_be_told_nothing_is_said(runs, credentials, monkeypatch,
                                                        capsys):
    fake = scripted(monkeypatch, [("QUEUED", "")])  # the answer holds no GPU figure
    try:
        assert cli.main(["--runs", str(runs), "cv", "--preset", "quick", "--remote", "kaggle",
                         "--no-wait"]) == 0
        asked = fake.count("GetAcceleratorQuotaStatistics")
        assert cli.main(["--runs", str(runs), "cv", "--preset", "quick", "--remote", "kaggle",
                         "--accelerator", "none", "--no-wait"]) == 0
    finally:
        fake.stop()
    assert "quota" not in capsys.readouterr().out.lower()
    assert asked == (1 if _client_has("quota_view") else 0)  # 2.2 asks; older ones cannot
    assert fake.count("GetAcceleratorQuotaStatistics") == asked  # a CPU run never asks


@pytest.mark.skipif(not _client_has("_warn_if_retired_accelerator"),
                    reason="this kaggle client does not warn about retired accelerators")
def test_the_clients_warning_on_stderr_is_kept_and_shown_as_one_line(runs, credentials,
                                                                     monkeypatch, capfd):
    fake = scripted(monkeypatch, [("QUEUED", "")])
    try:
        assert cli.main(["--runs", str(runs), "cv", "--preset", "quick", "--remote", "kaggle",
                         "--accelerator", "NvidiaTeslaP100", "--no-wait"]) == 0
        body = fake.kernel().body
    finally:
        fake.stop()
    entry = kernels.find_entry(runs)
    assert body["machineShape"] == "NvidiaTeslaP100"
    assert entry["warnings"] == ["⚠ Warning: 'NvidiaTeslaP100' is retired.",
                                 "Sessions run on the default GPU (NvidiaTeslaT4) instead."]
    err = capfd.readouterr().err
    assert "warning: kaggle: ⚠ Warning: 'NvidiaTeslaP100' is retired." in err
    assert "\x1b[" not in err  # the client's colours went into the kept text, not the terminal


class Clock:
    """Time that passes only when the code under test sleeps."""

    def __init__(self):
        self.now = 1_714_564_800.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1


@pytest.mark.parametrize("status, poll, timeout, expected, waited", [
    ("NEW_SCRIPT", 30, None, ("was saved but Kaggle started no run of it in 10 minutes "
     "(NEW_SCRIPT): open https://www.kaggle.com/code/me/kit-cv-1 to see why"), 600),
    ("QUEUED", 60, None, ("is still QUEUED after 2.0 hours: Kaggle has no NvidiaTeslaT4 "
     "machine free for it"), 7200),
    ("RUNNING", 600, 600, "is still RUNNING after 2.8 hours, past its run limit", 10_200),
    ("RUNNING", 3600, None, "is still RUNNING after 14.7 hours", 52_800),
])
def test_a_wait_always_ends_and_says_what_to_do(runs, credentials, monkeypatch, status, poll,
                                                timeout, expected, waited):
    fake = scripted(monkeypatch, [(status, "")])
    clock = Clock()
    entry = entry_for("me/kit-cv-1", timeout=timeout, accelerator="NvidiaTeslaT4",
                      url="https://www.kaggle.com/code/me/kit-cv-1")
    try:
        fake.kernels["me/kit-cv-1"] = _scripted_run(fake, "me/kit-cv-1")
        message = refusal(lambda: kernels.wait(runs, entry, poll=poll, now=clock,
                                               sleep=clock.sleep))
    finally:
        fake.stop()
    assert expected in message
    start = 1_714_564_800.0
    assert clock.now - start == pytest.approx(-(-waited // poll) * poll)  # the first poll past it
    assert fake.count("GetKernelSessionStatus") == clock.sleeps + 1
    assert entry["status"] == status and not entry.get("finished")  # the kernel is left alone


def push_and_attach(fake, monkeypatch, folder: Path, kernel: str, runs: Path):
    """Push the kernel folder to the fake server and wait for it with `remote attach`: the
    verb's exit code and the kernel's run."""
    fake.install(monkeypatch)
    pushed = kernel_api.push_kernel(folder)
    kernels.save_entry(runs, entry_for(kernel, version=pushed["version"], url=pushed["url"]))
    returned = cli.main(["--runs", str(runs), "remote", "attach", "--poll", "0.2"])
    return returned, fake.wait_for_kernel()


def test_a_kernel_that_cannot_install_what_it_needs_fails_with_that_line(
        tmp_path, runs, checkout, credentials, monkeypatch, capsys):
    (checkout / "pyproject.toml").write_text(
        '[project]\ndependencies = ["numpy>=1", "kit-surely-not-installed>=1"]\n')
    pushed_code = code.collect_code(checkout)
    folder = tmp_path / "kernel"
    options = kernels.KernelOptions(accelerator="none", internet=False)
    kernel = f"{FAKE_USER}/kit-cv-20240501-120000-quick"
    kernels.write_kernel_folder(folder, kernel, code.script_text(pushed_code, []), options)
    with FakeKaggle(kernel_home=tmp_path / "kaggle", queued_polls=0) as fake:
        code_, run = push_and_attach(fake, monkeypatch, folder, kernel, runs)
    err = capsys.readouterr().err.strip()
    assert run.returncode != 0 and code_ == 1 and "\n" not in err, err
    assert (f"kernel {kernel} failed (ERROR: kit: could not install kit-surely-not-installed>=1 "
            in err)
    assert "the kernel needs internet on for that" in err and "last log lines" not in err
    entry = kernels.find_entry(runs)
    assert entry["status"] == "ERROR"
    assert entry["failure"].startswith("kit: could not install kit-surely-not-installed>=1")


@pytest.mark.slow
def test_a_kernel_whose_jax_falls_back_to_the_cpu_beside_a_gpu_ends_as_that_line(
        tmp_path, runs, credentials, monkeypatch, capsys, synth_competition):
    # The kernel's machine has an NVIDIA GPU (a stub nvidia-smi on its PATH) and a CPU jax.
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "nvidia-smi").write_text('#!/bin/sh\necho "Tesla T4, 7.5, 15360, 535.104.05"\n')
    (stub / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub}{os.pathsep}{os.environ['PATH']}")
    competition = tmp_path / "competition"
    with zipfile.ZipFile(synth_competition[0]["archive"]) as archive:
        archive.extractall(competition)
    folder = tmp_path / "kernel"
    kernel = f"{FAKE_USER}/kit-cv-20240501-120000-quick"
    kernels.write_kernel_folder(folder, kernel, code.script_text(
        code.collect_code(), ["--preset", "quick"]), kernels.KernelOptions(internet=False))
    with FakeKaggle(competition_files=competition, kernel_home=tmp_path / "kaggle",
                    queued_polls=0) as fake:
        returned, run = push_and_attach(fake, monkeypatch, folder, kernel, runs)
    err = capsys.readouterr().err.strip()
    log = "".join(entry["data"] for entry in run.log_entries)
    assert run.returncode == 1 and returned == 1 and "\n" not in err, err + log[-2000:]
    assert err.startswith(f"error: kernel {kernel} failed (ERROR: error: jax "), err
    assert "runs on the CPU only, but this machine has an NVIDIA GPU (Tesla T4)" in err
    assert "--allow-cpu" in err and "last log lines" not in err
    # The kernel said what it runs on first, before the cv it was sent to run.
    assert log.index("NVIDIA driver lists: Tesla T4") < log.index("running: python -m kit")
    assert not list((run.root / "working" / "cv").glob("*/config.json"))
