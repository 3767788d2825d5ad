"""A loopback stand-in for Kaggle's competition API, for tests that drive the real client.

How the unmodified `kaggle` client reaches it:
- KAGGLE_API_ENVIRONMENT=LOCALHOST makes KaggleApi send every call to http://localhost (port 80)
  as `POST /api/v1/<Service>/<Method>` with a JSON body. KaggleApi reads this variable ONCE,
  when `kaggle.api.kaggle_api_extended` is first imported (the class attribute `args` gets
  "--local"), so a test module sets it in os.environ at import time, before anything imports
  the client; `FakeKaggle.install` checks that it happened and says so if not.
- http_proxy=http://127.0.0.1:PORT then routes those plain-http calls here: requests sends
  proxy-form request lines (`POST http://localhost/api/v1/...`), so the handler parses the
  path out of an absolute URL. no_proxy/NO_PROXY must be unset or localhost could bypass us.

Usage:
    with FakeKaggle(zip_bytes=b"...") as server:
        server.install(monkeypatch)         # env vars for the client
        server.fail("DownloadDataFiles", 500, times=2)   # then it succeeds
        ...
        server.uploads, server.authorizations, server.calls   # what the client sent

Methods that can be told to fail: the API methods in API_METHODS, plus "File" (the GET of the
zip after the download redirect), "Upload" (the PUT of a submission file) and "KernelFile" (the
GET of a kernel's output file).

Kernels (SaveKernel, GetKernelSessionStatus, ListKernelSessionOutput, and
GetAcceleratorQuotaStatistics for `gpu_quota`, which kaggle >= 2.2 asks): a pushed script really
runs, as a subprocess of the test's Python, in a temporary Kaggle-like tree (`kernel_home`/<slug>
-v<version>/ with input/<competition>/ -> `competition_files`, working/, temp/), told where that
tree is by KIT_KAGGLE_ROOT and given no credentials and no proxy (and, pushed without
internet, no package index either). Its status is QUEUED for the
first `queued_polls` status calls, RUNNING while it runs, then COMPLETE (exit 0) or ERROR (with
a failure message; a run longer than the push's sessionTimeoutSeconds is killed, as Kaggle
does). Its log is Kaggle's JSON list of {stream_name, time, data}; its outputs, every file it
left under working/, are listed once it has stopped, `output_page_size` to a page. With
`kernel_statuses` set, nothing runs: status calls answer those (status, failure message) pairs
in turn (the last repeats) and the outputs are `kernel_files`, the log `kernel_log`.
"""
from __future__ import annotations

import email.utils
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations are never evaluated, so no runtime dependency
    from typing_extensions import Self

RULES_MESSAGE = "You must accept this competition's rules before you'll be able to submit."

API_METHODS = (
    "DownloadDataFiles",
    "StartSubmissionUpload",
    "CreateSubmission",
    "ListSubmissions",
    "GetSubmissionLimits",
    "IntrospectToken",
)
KERNEL_METHODS = ("SaveKernel", "GetKernelSessionStatus", "ListKernelSessionOutput",
                  "GetAcceleratorQuotaStatistics")
FAILABLE = API_METHODS + KERNEL_METHODS + ("File", "Upload", "KernelFile")
# What the fake says when it stops a kernel at its session timeout.
KERNEL_TIMEOUT_MESSAGE = ("Your notebook was stopped because it exceeded the max allowed "
                          "execution duration.")

DEFAULT_MESSAGES = {
    401: "Unauthenticated: the supplied credentials are not valid.",
    403: RULES_MESSAGE,
    404: "Not found.",
    429: "Submission limit reached: you may submit 5 times a day.",
    500: "Internal server error.",
    503: "Service unavailable.",
}

# A fixed Last-Modified: the client parses it with "%a, %d %b %Y %H:%M:%S %Z".
LAST_MODIFIED = email.utils.formatdate(1_400_000_000, usegmt=True)


@dataclass
class Failure:
    status: int
    message: str
    times: int | None  # None: every call fails


@dataclass
class Upload:
    token: str
    file_name: str
    data: bytes | None = None  # None until the client PUTs the bytes


@dataclass
class KernelRun:
    """One pushed version of a kernel and, when it really runs, its process and log."""

    ref: str  # owner/slug
    version: int
    body: dict[str, Any]  # the SaveKernel request
    root: Path | None = None  # the session's stand-in for /kaggle
    status_polls: int = 0
    scripted: list[tuple[str, str]] | None = None
    log_entries: list[dict[str, Any]] = field(default_factory=list)
    process: subprocess.Popen | None = None
    runner: threading.Thread | None = None
    returncode: int | None = None
    timed_out: bool = False

    @property
    def done(self) -> bool:
        return self.runner is not None and not self.runner.is_alive()


@dataclass
class Submission:
    ref: int
    file_name: str
    description: str
    date: str
    polls_seen: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class FakeKaggle:
    """The server and its state; every attribute is safe to read from the test thread."""

    def __init__(
        self,
        *,
        zip_bytes: bytes = b"PK\x05\x06" + b"\x00" * 18,  # an empty but valid zip
        competition: str = "facial-keypoints-detection",
        public_score: str = "2.71828",
        private_score: str = "3.14159",
        pending_polls: int = 0,
        final_status: str = "COMPLETE",
        error_description: str = "",
        accepted_authorizations: set[str] | None = None,
        token_username: str = "fake-user",
        competition_files: Path | None = None,
        kernel_home: Path | None = None,
        queued_polls: int = 1,
        kernel_statuses: list[tuple[str, str]] | None = None,
        kernel_files: dict[str, bytes] | None = None,
        kernel_log: str = "",
        push_error: str = "",
        output_page_size: int | None = None,
        gpu_quota: tuple[float, float] | None = None,
        quota_refresh: str = "2024-05-06T00:00:00Z",
    ):
        self.zip_bytes = zip_bytes
        self.competition = competition
        self.public_score = public_score
        self.private_score = private_score
        # ListSubmissions answers PENDING for a new submission this many times, then final_status.
        self.pending_polls = pending_polls
        self.final_status = final_status
        self.error_description = error_description
        # None accepts any Authorization header; a set answers 401 to anything else.
        self.accepted_authorizations = accepted_authorizations
        self.token_username = token_username
        # Kernels: what a pushed script sees at input/<competition>, where sessions live.
        self.competition_files = competition_files
        self.kernel_home = kernel_home
        self.queued_polls = queued_polls
        self.kernel_statuses = kernel_statuses
        self.kernel_files = kernel_files or {}
        self.kernel_log = kernel_log
        self.push_error = push_error  # SaveKernel's "error" (Kaggle's way to refuse a push)
        self.output_page_size = output_page_size  # None: the client's pageSize
        # GetAcceleratorQuotaStatistics: (seconds used, seconds allowed) of GPU time this week;
        # None answers no GPU figure at all.
        self.gpu_quota = gpu_quota
        self.quota_refresh = quota_refresh
        self.kernels: dict[str, KernelRun] = {}  # owner/slug -> its latest version

        self.calls: list[str] = []  # method names, in order
        self.authorizations: list[str | None] = []  # the Authorization header of each call
        self.bodies: list[dict[str, Any]] = []  # JSON bodies of the API calls
        self.uploads: list[Upload] = []
        self.submissions: list[Submission] = []  # newest first, as Kaggle lists them
        self._failures: dict[str, Failure] = {}
        self._lock = threading.Lock()
        self._next_ref = 50_000_001
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeKaggle:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits up to one interval, once per test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        for run in list(self.kernels.values()):
            if run.process is not None and run.process.poll() is None:
                run.process.kill()
            if run.runner is not None:
                run.runner.join(timeout=10)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start the server first"
        return self._server.server_address[1]

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def install(self, monkeypatch: Any) -> None:
        """Point the real client at this server for one test (pytest's monkeypatch undoes it)."""
        install_proxy(monkeypatch, self.proxy_url)

    # ---- configuration ---------------------------------------------------------------------

    def fail(self, method: str, status: int, *, times: int | None = None,
             message: str | None = None) -> None:
        """Answer `status` to the next `times` calls of `method` (all of them if None)."""
        if method not in FAILABLE:
            raise ValueError(f"unknown method {method!r}: expected one of {FAILABLE}")
        text = message if message is not None else DEFAULT_MESSAGES.get(status, "Error.")
        with self._lock:
            self._failures[method] = Failure(status, text, times)

    def add_submission(self, file_name: str, description: str = "", **extra: Any) -> int:
        """Put a submission in the list as if it had been made earlier; returns its ref."""
        with self._lock:
            return self._add_submission(file_name, description, extra)

    def count(self, method: str) -> int:
        return self.calls.count(method)

    def kernel(self, ref: str | None = None) -> KernelRun:
        """A pushed kernel's latest version (the only one pushed, if ref is None)."""
        if ref is None:
            assert len(self.kernels) == 1, f"kernels pushed: {sorted(self.kernels)}"
            return next(iter(self.kernels.values()))
        return self.kernels[ref]

    def wait_for_kernel(self, ref: str | None = None, timeout: float = 600) -> KernelRun:
        run = self.kernel(ref)
        if run.runner is not None:
            run.runner.join(timeout)
        return run

    # ---- used by the handler ---------------------------------------------------------------

    def _take_failure(self, method: str) -> Failure | None:
        with self._lock:
            failure = self._failures.get(method)
            if failure is None:
                return None
            if failure.times is not None:
                failure.times -= 1
                if failure.times <= 0:
                    del self._failures[method]
            return failure

    def _add_submission(self, file_name: str, description: str, extra: dict[str, Any]) -> int:
        ref = self._next_ref
        self._next_ref += 1
        date = f"2024-05-0{1 + len(self.submissions) % 9}T12:00:00.123Z"
        self.submissions.insert(0, Submission(ref, file_name, description, date, extra=extra))
        return ref

    # ---- kernels ---------------------------------------------------------------------------

    def _start_kernel(self, run: KernelRun) -> None:
        home = self.kernel_home or Path(tempfile.mkdtemp(prefix="fake-kaggle-kernels-"))
        root = Path(home) / f"{run.ref.split('/')[-1]}-v{run.version}"
        for name in ("working", "temp", "input", "code", "home"):
            (root / name).mkdir(parents=True, exist_ok=True)
        sources = run.body.get("competitionDataSources") or []
        if self.competition in sources and self.competition_files is not None:
            (root / "input" / self.competition).symlink_to(Path(self.competition_files).resolve())
        code = root / "code" / "script.py"
        code.write_text(run.body.get("text", ""))
        run.root = root
        env = {name: value for name, value in os.environ.items()
               if not name.startswith("KAGGLE_") and name.lower() not in _PROXY_VARIABLES
               and name not in ("PYTHONPATH", "KIT_DATA", "KIT_RUNS", "KIT_SUBMISSIONS")}
        env.update(KIT_KAGGLE_ROOT=str(root), KAGGLE_KERNEL_RUN_TYPE="Batch",
                   HOME=str(root / "home"), PYTHONUNBUFFERED="1")
        if run.body.get("enableInternet") is False:
            # A kernel without internet reaches no package index: pip finds nothing, and
            # anything else that tries the network meets a closed port.
            env.update(PIP_NO_INDEX="1", http_proxy="http://127.0.0.1:9",
                       https_proxy="http://127.0.0.1:9")
        timeout = run.body.get("sessionTimeoutSeconds")
        run.runner = threading.Thread(target=self._run_kernel, args=(run, code, env, timeout),
                                      daemon=True)
        run.runner.start()

    def _run_kernel(self, run: KernelRun, code: Path, env: dict[str, str],
                    timeout: float | None) -> None:
        started = time.monotonic()
        run.process = subprocess.Popen([sys.executable, str(code)], cwd=run.root / "working",
                                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, errors="replace")
        readers = [threading.Thread(target=self._read_stream, args=(run, stream, name, started),
                                    daemon=True)
                   for stream, name in ((run.process.stdout, "stdout"),
                                        (run.process.stderr, "stderr"))]
        for reader in readers:
            reader.start()
        try:
            run.returncode = run.process.wait(timeout=timeout or None)
        except subprocess.TimeoutExpired:
            run.timed_out = True
            run.process.kill()
            run.returncode = run.process.wait()
        for reader in readers:
            reader.join(timeout=10)

    def _read_stream(self, run: KernelRun, stream: Any, name: str, started: float) -> None:
        for line in stream:
            with self._lock:
                run.log_entries.append({"stream_name": name,
                                        "time": round(time.monotonic() - started, 3),
                                        "data": line})

    def _kernel_status(self, run: KernelRun) -> tuple[str, str]:
        run.status_polls += 1
        if run.scripted is not None:
            return run.scripted.pop(0) if len(run.scripted) > 1 else run.scripted[0]
        if run.status_polls <= self.queued_polls:
            return "QUEUED", ""
        if not run.done:
            return "RUNNING", ""
        if run.timed_out:
            return "ERROR", KERNEL_TIMEOUT_MESSAGE
        if run.returncode != 0:
            return "ERROR", f"Your notebook hit an unhandled error (exit code {run.returncode})."
        return "COMPLETE", ""

    def _kernel_outputs(self, run: KernelRun) -> dict[str, Path | bytes]:
        if run.scripted is not None:
            return dict(self.kernel_files)
        if not run.done:
            return {}
        working = run.root / "working"
        return {str(path.relative_to(working)): path for path in sorted(working.rglob("*"))
                if path.is_file() and not any(p.is_symlink() for p in
                                              [path, *path.relative_to(working).parents])}

    def _kernel_log_text(self, run: KernelRun) -> str:
        if run.scripted is not None:
            return self.kernel_log
        with self._lock:
            return json.dumps(run.log_entries)

    def _submission_json(self, submission: Submission) -> dict[str, Any]:
        answer = {
            "ref": submission.ref,
            "fileName": submission.file_name,
            "date": submission.date,
            "description": submission.description,
            "status": "PENDING",
            "totalBytes": 0,
        }
        if submission.polls_seen >= self.pending_polls:
            answer["status"] = self.final_status
            if self.final_status == "COMPLETE":
                answer["publicScore"] = self.public_score
                answer["privateScore"] = self.private_score
            else:
                answer["errorDescription"] = self.error_description
        answer.update(submission.extra)
        return answer


def isolated_kaggle_home(tmp_path: Path, monkeypatch: Any) -> Path:
    """A fresh HOME and KAGGLE_CONFIG_DIR and no credential variables, so the user's own
    credentials never leak into a test; returns the config folder (empty)."""
    home_dir, config_dir = tmp_path / "home", tmp_path / "kaggle-config"
    home_dir.mkdir()
    config_dir.mkdir()
    for name in list(os.environ):
        # The client reads every KAGGLE_* variable as a setting.
        if name.startswith("KAGGLE_") and name != "KAGGLE_API_ENVIRONMENT":
            monkeypatch.delenv(name)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home_dir))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config_dir))
    return config_dir


def write_kaggle_json(config_dir: Path, username: str, key: str) -> Path:
    """A kaggle.json with fake credentials, private to its owner as the client wants it."""
    path = Path(config_dir) / "kaggle.json"
    path.write_text(json.dumps({"username": username, "key": key}))
    path.chmod(0o600)
    return path


_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def install_proxy(monkeypatch: Any, proxy_url: str) -> None:
    """Route the client's plain-http calls to `proxy_url` (a fake server or a closed port)."""
    _check_client_is_local()
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, proxy_url)
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)


def _check_client_is_local() -> None:
    # KaggleApi froze its target when it was first imported; if that happened before the test
    # module set KAGGLE_API_ENVIRONMENT, calls would go to api.kaggle.com instead of here.
    import sys

    module = sys.modules.get("kaggle.api.kaggle_api_extended")
    if module is not None and "--local" not in module.KaggleApi.args:
        raise RuntimeError(
            "kaggle.api.kaggle_api_extended was imported before KAGGLE_API_ENVIRONMENT=LOCALHOST "
            "was set; set it in os.environ at the top of the test module"
        )


class _Handler(http.server.BaseHTTPRequestHandler):
    fake: FakeKaggle  # set on the subclass made by FakeKaggle.start

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean

    # ---- dispatch --------------------------------------------------------------------------

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        method = path.rsplit("/", 1)[-1]
        body = self._read_body()
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            self._send_error(400, "request body is not JSON")
            return
        if not path.startswith("/api/v1/") or method not in API_METHODS + KERNEL_METHODS:
            self._send_error(404, f"no such method: {path}")
            return
        with self.fake._lock:
            self.fake.bodies.append(payload)
        self._serve(method, lambda: getattr(self, f"_api_{method}")(payload))

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/kernel-output/"):
            self._serve("KernelFile", lambda: self._get_kernel_file(path))
            return
        self._serve("File", lambda: self._get_file(path))

    def do_PUT(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        data = self._read_body()
        self._serve("Upload", lambda: self._put_upload(path, data))

    def _serve(self, method: str, answer: Any) -> None:
        authorization = self.headers.get("Authorization")
        with self.fake._lock:
            self.fake.calls.append(method)
            self.fake.authorizations.append(authorization)
        failure = self.fake._take_failure(method)
        if failure is not None:
            self._send_error(failure.status, failure.message)
            return
        accepted = self.fake.accepted_authorizations
        if accepted is not None and method != "IntrospectToken" and authorization not in accepted:
            self._send_error(401, DEFAULT_MESSAGES[401])
            return
        answer()

    # ---- API methods -----------------------------------------------------------------------

    def _api_DownloadDataFiles(self, payload: dict[str, Any]) -> None:
        competition = payload.get("competitionName", "")
        if competition != self.fake.competition:
            self._send_error(404, f"Competition '{competition}' not found.")
            return
        # The client names the file after the extension of the URL it is redirected to.
        self.send_response(302)
        self.send_header("Location", f"http://{self._host()}/files/{competition}.zip")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _api_StartSubmissionUpload(self, payload: dict[str, Any]) -> None:
        if not self._known_competition(payload):
            return
        with self.fake._lock:
            token = f"blob-token-{len(self.fake.uploads) + 1}"
            self.fake.uploads.append(Upload(token, payload.get("fileName", "")))
        self._send_json(200, {"token": token, "createUrl": f"http://{self._host()}/upload/{token}"})

    def _api_CreateSubmission(self, payload: dict[str, Any]) -> None:
        if not self._known_competition(payload):
            return
        token = payload.get("blobFileTokens", "")
        upload = next((u for u in self.fake.uploads if u.token == token and u.data is not None), None)
        if upload is None:
            self._send_error(400, f"no uploaded file for token {token!r}")
            return
        with self.fake._lock:
            ref = self.fake._add_submission(
                upload.file_name, payload.get("submissionDescription", ""), {}
            )
        self._send_json(200, {
            "message": f"Successfully submitted to {self.fake.competition}",
            "ref": ref,
        })

    def _api_ListSubmissions(self, payload: dict[str, Any]) -> None:
        if not self._known_competition(payload):
            return
        with self.fake._lock:
            answer = [self.fake._submission_json(s) for s in self.fake.submissions]
            for submission in self.fake.submissions:
                submission.polls_seen += 1
        self._send_json(200, {"submissions": answer})

    def _api_GetSubmissionLimits(self, payload: dict[str, Any]) -> None:
        today = len(self.fake.submissions)
        self._send_json(200, {
            "numToday": today,
            "numTotal": today,
            "numAllowedNow": max(0, 5 - today),
            "limitedByTotal": False,
        })

    def _api_IntrospectToken(self, payload: dict[str, Any]) -> None:
        # Any non-empty token is "active": the tests care about what the client sends next.
        active = bool(payload.get("token"))
        self._send_json(200, {"active": active, "username": self.fake.token_username if active else ""})

    def _api_SaveKernel(self, payload: dict[str, Any]) -> None:
        fake = self.fake
        ref = payload.get("slug", "")
        if fake.push_error:
            self._send_json(200, {"error": fake.push_error})
            return
        invalid = [s for s in payload.get("competitionDataSources") or []
                   if s != fake.competition]
        with fake._lock:
            previous = fake.kernels.get(ref)
            run = KernelRun(ref, previous.version + 1 if previous else 1, payload)
            if fake.kernel_statuses is not None:
                run.scripted = list(fake.kernel_statuses)
            fake.kernels[ref] = run
        if run.scripted is None:
            fake._start_kernel(run)
        self._send_json(200, {
            "ref": f"/code/{ref}", "url": f"https://www.kaggle.com/code/{ref}",
            "versionNumber": run.version, "error": "",
            "invalidCompetitionSources": invalid, "kernelId": 1000 + len(fake.kernels),
        })

    def _api_GetAcceleratorQuotaStatistics(self, payload: dict[str, Any]) -> None:
        # Durations as protobuf JSON writes them ("3600s"), as the SDK reads them.
        answer: dict[str, Any] = {"quotaRefreshTime": self.fake.quota_refresh}
        if self.fake.gpu_quota is not None:
            used, allowed = self.fake.gpu_quota
            answer["gpuQuota"] = {"timeUsed": f"{used:g}s", "totalTimeAllowed": f"{allowed:g}s",
                                  "timeReserved": "0s"}
        self._send_json(200, answer)

    def _kernel_run(self, payload: dict[str, Any]) -> KernelRun | None:
        ref = f"{payload.get('userName', '')}/{payload.get('kernelSlug', '')}"
        run = self.fake.kernels.get(ref)
        if run is None:
            self._send_error(404, f"Kernel {ref} not found.")
        return run

    def _api_GetKernelSessionStatus(self, payload: dict[str, Any]) -> None:
        run = self._kernel_run(payload)
        if run is not None:
            status, failure = self.fake._kernel_status(run)
            answer = {"status": status}
            if failure:
                answer["failureMessage"] = failure
            self._send_json(200, answer)

    def _api_ListKernelSessionOutput(self, payload: dict[str, Any]) -> None:
        run = self._kernel_run(payload)
        if run is None:
            return
        names = sorted(self.fake._kernel_outputs(run))
        size = self.fake.output_page_size or int(payload.get("pageSize") or 20)
        start = int(payload.get("pageToken") or 0)
        page = names[start:start + size]
        quoted = urllib.parse.quote(run.ref)
        answer = {
            "files": [{"fileName": name, "url": f"http://{self._host()}/kernel-output/{quoted}/"
                                                f"{urllib.parse.quote(name)}"} for name in page],
            "log": self.fake._kernel_log_text(run),
        }
        if start + size < len(names):
            answer["nextPageToken"] = str(start + size)
        self._send_json(200, answer)

    # ---- files -----------------------------------------------------------------------------

    def _get_kernel_file(self, path: str) -> None:
        parts = urllib.parse.unquote(path).split("/")  # "", kernel-output, owner, slug, name...
        run = self.fake.kernels.get("/".join(parts[2:4]))
        outputs = self.fake._kernel_outputs(run) if run is not None else {}
        found = outputs.get("/".join(parts[4:]))
        if found is None:
            self._send_error(404, f"no such kernel output: {path}")
            return
        data = found if isinstance(found, bytes) else found.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _get_file(self, path: str) -> None:
        if path != f"/files/{self.fake.competition}.zip":
            self._send_error(404, f"no such file: {path}")
            return
        data = self.fake.zip_bytes
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Last-Modified", LAST_MODIFIED)
        self.end_headers()
        self.wfile.write(data)

    def _put_upload(self, path: str, data: bytes) -> None:
        token = path.rsplit("/", 1)[-1]
        with self.fake._lock:
            upload = next((u for u in self.fake.uploads if u.token == token), None)
            if upload is not None:
                upload.data = data
        if upload is None:
            self._send_error(404, f"no upload started for token {token!r}")
            return
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    # ---- helpers ---------------------------------------------------------------------------

    def _known_competition(self, payload: dict[str, Any]) -> bool:
        competition = payload.get("competitionName", "")
        if competition == self.fake.competition:
            return True
        self._send_error(404, f"Competition '{competition}' not found.")
        return False

    def _host(self) -> str:
        # Proxy-form requests carry Host: localhost; direct ones carry 127.0.0.1:PORT.
        return self.headers.get("Host") or f"127.0.0.1:{self.fake.port}"

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()  # the blank line after the last chunk
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _send_json(self, status: int, data: dict[str, Any]) -> None:
        body = json.dumps(data).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, status: int, message: str) -> None:
        # Kaggle's shape: the client raises HTTPError(message) when "code" >= 400.
        self._send_json(status, {"code": status, "message": message})
