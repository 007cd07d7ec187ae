"""Where `fmugw login` keeps the server URL and API key, and how the CLI finds them.

The file is $XDG_CONFIG_HOME/fmugw/config.json (~/.config/... by default), readable by
its owner only, since it holds a secret. FMUGW_URL and FMUGW_API_KEY override it, so
CI jobs need no file at all.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

URL_VARIABLE = "FMUGW_URL"
API_KEY_VARIABLE = "FMUGW_API_KEY"


@dataclass(frozen=True)
class Credentials:
    url: str | None
    api_key: str | None


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    directory = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return directory / "fmugw" / "config.json"


def stored_credentials(path: Path | None = None) -> Credentials:
    """What `fmugw login` saved; empty when nothing was saved or the file is unreadable."""
    try:
        data = json.loads((path or config_path()).read_text())
    except (OSError, ValueError):
        return Credentials(url=None, api_key=None)
    if not isinstance(data, dict):
        return Credentials(url=None, api_key=None)
    return Credentials(url=data.get("url") or None, api_key=data.get("api_key") or None)


def current_credentials(path: Path | None = None) -> Credentials:
    """The environment first, then the saved login."""
    stored = stored_credentials(path)
    return Credentials(
        url=os.environ.get(URL_VARIABLE) or stored.url,
        api_key=os.environ.get(API_KEY_VARIABLE) or stored.api_key,
    )


def save_credentials(url: str, api_key: str, path: Path | None = None) -> Path:
    """Write the login atomically with mode 0600 (the directory 0700)."""
    target = path or config_path()
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".config-", text=True)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes it 0600 already; say so explicitly
            os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump({"url": url, "api_key": api_key}, handle, indent=2)
            handle.write("\n")
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
