"""Watching a live server's processes: which one serves, and how much memory it takes."""

from __future__ import annotations

import threading
import time

import psutil


def gunicorn_worker(server) -> psutil.Process:
    """The one worker process of a live gunicorn started with --workers 1."""
    (worker,) = psutil.Process(server.process.pid).children()
    return worker


class PeakMemory:
    """Samples the resident memory of a process tree's worker while a download runs."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()
