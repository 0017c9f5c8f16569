"""A WSGI app for gunicorn, with or without `--preload`: the same module works for both.

    gunicorn -c gunicorn_conf.py -w 4 wsgi_app:app            # each worker imports it
    gunicorn -c gunicorn_conf.py -w 4 --preload wsgi_app:app  # the master imports it

Without `--preload` every worker imports this module after the fork and connects its own
client. With `--preload` the master connects while importing it, then forks: each
worker starts its own subscriber and presence in the child (the parent's connections
are never read there), and the master, which serves no requests, is not counted in
`flagsync workers` or `--wait`. `gunicorn_conf.py` closes the clients.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from logging_setup import configure_logging

from flagsync import FlagClient

configure_logging()
client = FlagClient.connect(
    os.environ.get("REDIS_URL"), namespace=os.environ.get("FLAGSYNC_NAMESPACE", "default")
)
client.wait_ready(2.0)  # False: defaults (or an LKG file) until the first sync

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Serve the model flag for the user named by the `X-User` header."""
    user = {"key": environ.get("HTTP_X_USER", "anonymous")}
    body = json.dumps(
        {
            "pid": os.getpid(),
            "model": client.string_value("llm-model-version", user, "gpt-4o"),
            "revision": client.revision,
            "state": str(client.status().state),
        }
    ).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response("200 OK", headers)
    return [body]
