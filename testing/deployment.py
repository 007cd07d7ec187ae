"""The deployment's own files, as the tests read them."""

from __future__ import annotations

import tomllib
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent


def fly_config() -> dict:
    """fly.toml, parsed."""
    return tomllib.loads((PROJECT_DIR / "fly.toml").read_text())
