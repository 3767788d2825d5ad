"""The Kaggle credentials the client would send, found without importing it (importing
`kaggle` authenticates at once), and kept out of every message, pushed file and output.

The answers name a variable or a file, never a value; `redact` and `contains_credentials`
know every credential value this machine holds, so nothing the kit says or pushes repeats one.
"""
from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

from kit.core.errors import KitError

NEW_TOKEN_HINT = "kaggle.com > Settings > API > Create New Token"


def kaggle_config_dir() -> Path:
    """The folder the client reads kaggle.json from (it decides once, at import; we follow
    the environment as it is now, and make_api hands our answer to the client)."""
    configured = os.environ.get("KAGGLE_CONFIG_DIR")
    if configured:
        return Path(configured)
    legacy = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        # The client follows the XDG convention only when ~/.kaggle is absent.
        return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return legacy


def kaggle_json_path() -> Path:
    return kaggle_config_dir() / "kaggle.json"


def credentials_source() -> str | None:
    """Where the credential the client would send comes from, or None if there is none.

    The order is the client's: an API token (KAGGLE_API_TOKEN, then ~/.kaggle/access_token)
    goes on the wire even when kaggle.json is also there, then the username/key pair
    (KAGGLE_USERNAME/KAGGLE_KEY over kaggle.json, key by key), then `kaggle auth login`'s
    cached OAuth credentials. The answer names a variable or a file, never a value.
    """
    return _token_source() or _key_pair_source() or _oauth_source()


def kaggle_json_warning() -> str | None:
    """A warning when kaggle.json can be read by other users of this machine."""
    path = kaggle_json_path()
    if os.name == "nt":
        return None  # POSIX modes mean nothing there; the client skips the check too
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & 0o077 == 0:
        return None
    return f"{path} can be read by other users of this machine: run chmod 600 {path}"


def _token_source() -> str | None:
    value = os.environ.get("KAGGLE_API_TOKEN")
    if value:
        # The variable may hold the token or the name of a file holding it. os.path.exists
        # rather than Path.exists: a long token is an over-long file name, which Path raises on.
        if os.path.exists(value):
            return f"the file {value} named by KAGGLE_API_TOKEN"
        return "KAGGLE_API_TOKEN"
    for path in _token_files():
        if _read_text(path):
            return str(path)
    return None


def _token_files() -> list[Path]:
    # The client looks here whatever KAGGLE_CONFIG_DIR says.
    folder = Path.home() / ".kaggle"
    return [folder / "access_token", folder / "access_token.txt"]


def _key_pair_source() -> str | None:
    path = kaggle_json_path()
    stored = _read_kaggle_json(path) or {}
    env_user = os.environ.get("KAGGLE_USERNAME")
    env_key = os.environ.get("KAGGLE_KEY")
    if not ((env_user or stored.get("username")) and (env_key or stored.get("key"))):
        return None
    if env_user and env_key:
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    if env_user or env_key:
        return f"{path} and KAGGLE_USERNAME/KAGGLE_KEY"
    return str(path)


def _oauth_source() -> str | None:
    path = Path.home() / ".kaggle" / "credentials.json"
    data = read_json(path)
    if isinstance(data, dict) and data.get("refresh_token"):
        return f"{path} (from `kaggle auth login`)"
    return None


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _read_kaggle_json(path: Path) -> dict[str, Any] | None:
    data = read_json(path)
    return data if isinstance(data, dict) else None


def missing_credentials_message() -> str:
    path = kaggle_json_path()
    if path.exists() and _read_kaggle_json(path) is None:
        return (
            f"{path} is not a readable kaggle.json: expected "
            f'{{"username": "...", "key": "..."}}; download a fresh one ({NEW_TOKEN_HINT})'
        )
    if path.exists():
        return f'{path} lacks "username" or "key": download a fresh one ({NEW_TOKEN_HINT})'
    suggested = path if os.environ.get("KAGGLE_CONFIG_DIR") else "~/.kaggle/kaggle.json"
    return (
        f"no Kaggle credentials: put kaggle.json (from {NEW_TOKEN_HINT}) in {suggested} "
        "with chmod 600, or set KAGGLE_USERNAME and KAGGLE_KEY"
    )


def credential_hint() -> str:
    source = credentials_source()
    if source is None:
        return "your Kaggle credentials"
    if "KAGGLE_API_TOKEN" in source or "access_token" in source or "credentials.json" in source:
        # A token wins over kaggle.json on the wire, so a stale one breaks a good key pair.
        return f"the token in {source} (a token is sent even when kaggle.json is also present)"
    return f"the username and key in {source}"


def _secret_values() -> list[str]:
    """Every credential value we can see, so that no message repeats one."""
    stored = _read_kaggle_json(kaggle_json_path()) or {}
    user = os.environ.get("KAGGLE_USERNAME") or stored.get("username")
    key = os.environ.get("KAGGLE_KEY") or stored.get("key")
    values = [key, stored.get("key"), os.environ.get("KAGGLE_KEY")]
    token = os.environ.get("KAGGLE_API_TOKEN")
    values.append(token)
    if token and os.path.exists(token):
        values.append(_read_text(Path(token)))
    values.extend(_read_text(path) for path in _token_files())
    if isinstance(user, str) and isinstance(key, str):
        # The Basic auth header a server might echo back.
        values.append(base64.b64encode(f"{user}:{key}".encode()).decode())
    return [value for value in values if isinstance(value, str) and len(value) >= 4]


def redact(text: str) -> str:
    for secret in _secret_values():
        text = text.replace(secret, "***")
    return text


def kit_error(text: str) -> KitError:
    return KitError(" ".join(redact(text).split()))



def contains_credentials(data: bytes | str) -> bool:
    """True when any credential value we can see appears in `data` (code about to be pushed,
    files that came back from a kernel)."""
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    return any(secret.encode() in raw for secret in _secret_values())

