"""A WSGI app for gunicorn, with or without `--preload`: the same module works for both.

    gunicorn -c gunicorn_conf.py -w 4 wsgi_app:app            # each worker imports it
    gunicorn -c gunicorn_conf.py -w 4 --preload wsgi_app:app  # the master imports it

Without `--preload` every worker imports this module after the fork and connects its own
client. With `--preload` the master connects while importing it, then forks: each
worker starts its own subscriber and presence in the child (the parent's connections
are never read there), and the master, which serves no requests, is not counted in
`flagsync workers` or `--wait`. `gunicorn_conf.py` closes the clients, and starts the
OpenFeature provider in each worker (`start_openfeature`) when openfeature-sdk is there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from logging_setup import configure_logging

from flagsync import FlagClient

try:  # optional: the OpenFeature API over the same client (flagsync[openfeature])
    from openfeature import api as openfeature
    from openfeature.evaluation_context import EvaluationContext

    from flagsync.openfeature import FlagsyncProvider
except ImportError:  # without it, the apps answer `openfeature_model: null`
    openfeature = None  # type: ignore[assignment]

configure_logging()
client = FlagClient.connect(
    os.environ.get("REDIS_URL"), namespace=os.environ.get("FLAGSYNC_NAMESPACE", "default")
)
client.wait_ready(2.0)  # False: defaults (or an LKG file) until the first sync

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def start_openfeature() -> None:
    """In each worker, after the fork (`gunicorn_conf.post_worker_init`): the SDK's thread
    pool and the provider's event thread do not survive a fork, the client does."""
    if openfeature is not None:
        openfeature.set_provider_and_wait(FlagsyncProvider(client))


def stop_openfeature() -> None:
    """Before `client.close()`: shut the provider down (it leaves the client open)."""
    if openfeature is not None:
        openfeature.shutdown()


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Serve the model flag for the user named by the `X-User` header."""
    user = {"key": environ.get("HTTP_X_USER", "anonymous")}
    body = json.dumps(
        {
            "pid": os.getpid(),
            "model": client.string_value("llm-model-version", user, "gpt-4o"),
            "revision": client.revision,
            "state": str(client.status().state),
            "openfeature_model": None
            if openfeature is None
            else openfeature.get_client().get_string_value(
                "llm-model-version", "gpt-4o", EvaluationContext(user["key"])
            ),
        }
    ).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response("200 OK", headers)
    return [body]
