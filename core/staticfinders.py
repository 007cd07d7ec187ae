"""Serve plotly.js from the installed plotly package as static/vendor/plotly.min.js."""

from __future__ import annotations

from pathlib import Path

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

PLOTLY_STATIC_NAME = "vendor/plotly.min.js"


class PlotlyJsFinder(BaseFinder):
    """Exposes only plotly.min.js from the package (not its data sets or widget bundle)."""

    def __init__(self, *args, **kwargs) -> None:
        self.package_data = Path(plotly.__file__).parent / "package_data"
        self.storage = FileSystemStorage(location=str(self.package_data))
        # collectstatic copies a finder storage's files under its `prefix`, an attribute
        # that Django's own FileSystemFinder sets the same way (no Storage declares it).
        self.storage.prefix = "vendor"  # type: ignore[attr-defined]

    def check(self, **kwargs) -> list:
        return []

    def find(self, path: str, find_all: bool = False, **kwargs):
        if path == PLOTLY_STATIC_NAME:
            match = str(self.package_data / "plotly.min.js")
            return [match] if find_all else match
        return [] if find_all else None

    def list(self, ignore_patterns):
        yield "plotly.min.js", self.storage
