"""Wake requests that wait on a run (`?wait=N`) the moment it finishes.

With a Redis broker the worker publishes on a per-run channel and waiting requests block
on it, so a finished run is seen at once without polling the database. With the embedded
filesystem broker there is no server to publish through, and waiters poll instead.
"""

from __future__ import annotations

import contextlib
import logging
from functools import cache

import redis
from django.conf import settings
from redis.client import PubSub

logger = logging.getLogger(__name__)


@cache
def _client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)


def events_client() -> redis.Redis | None:
    url = settings.CELERY_BROKER_URL
    if not url.startswith(("redis://", "rediss://")):
        return None
    return _client_for(url)


def channel_name(simulation_id) -> str:
    return f"fmugateway:simulation-finished:{simulation_id}"


def publish_simulation_finished(simulation_id) -> None:
    """Best effort: a lost notice only means a waiter notices on its next database check."""
    client = events_client()
    if client is None:
        return
    try:
        client.publish(channel_name(simulation_id), b"finished")
    except redis.RedisError as error:
        logger.warning("could not publish the end of simulation %s: %s", simulation_id, error)


class FinishedNotices:
    """A subscription to one run's end; use as a context manager, subscribe before checking."""

    def __init__(self, simulation_id) -> None:
        self.channel = channel_name(simulation_id)
        self.pubsub: PubSub | None = None

    def __enter__(self) -> FinishedNotices:
        client = events_client()
        if client is not None:
            try:
                self.pubsub = client.pubsub(ignore_subscribe_messages=True)
                self.pubsub.subscribe(self.channel)
            except redis.RedisError as error:
                logger.warning("waiting without notices: %s", error)
                self.pubsub = None
        return self

    @property
    def available(self) -> bool:
        return self.pubsub is not None

    def wait(self, timeout: float) -> bool:
        """True if the run's end was announced within `timeout` seconds; only while
        `available`."""
        assert self.pubsub is not None, "wait() only while available"
        try:
            return self.pubsub.get_message(timeout=timeout) is not None
        except redis.RedisError:
            self.pubsub = None
            return False

    def __exit__(self, *exc_info) -> None:
        if self.pubsub is not None:
            with contextlib.suppress(redis.RedisError):
                self.pubsub.close()
