"""gunicorn settings for `wsgi_app`: close each process's FlagClient when it exits.

`close()` stops the subscriber and withdraws the worker's presence record at once, so
`flagsync workers` and `--wait` stop counting a worker the moment it exits instead of
when its record expires (`presence_ttl_s`, 5 s). A worker exits on SIGTERM, on
`--max-requests`, or when gunicorn replaces it after a timeout.
"""

from __future__ import annotations

import sys
from typing import Any


def _close_client() -> None:
    app = sys.modules.get("wsgi_app")  # absent when the app never finished importing
    if app is not None:
        app.stop_openfeature()
        app.client.close()


def post_worker_init(worker: Any) -> None:
    """In each worker, once the app is loaded (after the fork, with or without
    `--preload`): start the OpenFeature provider there, never in the master."""
    sys.modules["wsgi_app"].start_openfeature()


def worker_exit(server: Any, worker: Any) -> None:
    """In the worker, after it stopped serving: close its client."""
    _close_client()


def on_exit(server: Any) -> None:
    """In the master, as gunicorn exits: with `--preload` it holds a client too."""
    _close_client()
