"""The API key format and its keyed hash (no slow password hash per request)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from django.conf import settings

KEY_PATTERN = re.compile(r"^fmu_(?P<prefix>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{32,128})$")


def generate_key_parts() -> tuple[str, str]:
    """A 12-hex-digit lookup prefix and a 256-bit secret."""
    return secrets.token_hex(6), secrets.token_urlsafe(32)


def format_key(prefix: str, secret: str) -> str:
    return f"fmu_{prefix}_{secret}"


def parse_key(raw_key: str) -> tuple[str, str] | None:
    match = KEY_PATTERN.match(raw_key.strip())
    if not match:
        return None
    return match["prefix"], match["secret"]


def hash_secret(secret: str) -> str:
    # A high-entropy secret needs no stretching; the server pepper means a leaked
    # database alone does not let anyone check guesses.
    return hmac.new(settings.API_KEY_PEPPER.encode(), secret.encode(), hashlib.sha256).hexdigest()


def secret_matches(secret: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), secret_hash)
