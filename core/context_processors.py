"""What every page may show, whatever app renders it."""

from django.conf import settings
from django.http import HttpRequest


def site(request: HttpRequest) -> dict:
    """The public URL, for examples a visitor copies (curl lines on the API keys page)."""
    return {"site_url": settings.SITE_URL}
