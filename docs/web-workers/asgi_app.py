"""A FastAPI app: the client lives in the lifespan, one per worker process.

    uvicorn asgi_app:app --workers 4

`connect_async` follows the store in a task on the worker's event loop and stops when
the lifespan ends (uvicorn runs it in each worker, on start and on shutdown), so there
is no `close()` to call. `/metrics` exposes this worker's sync status for Prometheus.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from logging_setup import configure_logging
from prometheus_client import CollectorRegistry, make_asgi_app

from flagsync import FlagClient
from flagsync.prometheus import register

try:  # optional: the OpenFeature API over the same client (flagsync[openfeature])
    from openfeature import api as openfeature
    from openfeature.evaluation_context import EvaluationContext

    from flagsync.openfeature import FlagsyncProvider
except ImportError:  # without it, the apps answer `openfeature_model: null`
    openfeature = None  # type: ignore[assignment]

configure_logging()
registry = CollectorRegistry()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Connect before the first request; stop syncing when the worker shuts down."""
    url = os.environ.get("REDIS_URL")
    namespace = os.environ.get("FLAGSYNC_NAMESPACE", "default")
    async with FlagClient.connect_async(url, namespace) as client:
        await client.wait_ready_async(2.0)  # False: defaults until the first sync
        collector = register(client, registry)
        if openfeature is not None:  # in the worker, after the client is ready
            openfeature.set_provider_and_wait(FlagsyncProvider(client))
        app.state.flags = client
        try:
            yield
        finally:
            registry.unregister(collector)
            if openfeature is not None:
                openfeature.shutdown()


app = FastAPI(lifespan=lifespan)
app.mount("/metrics", make_asgi_app(registry))


@app.get("/")
async def model(request: Request) -> dict[str, Any]:
    """Serve the model flag for the user named by the `X-User` header."""
    client: FlagClient = request.app.state.flags
    user = {"key": request.headers.get("x-user", "anonymous")}
    return {
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
