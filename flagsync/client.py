"""`FlagClient`: evaluate flags against a context in microseconds, never raising.

The client holds one reference to an immutable snapshot's lookup table. Evaluation
reads that reference once and never locks; whatever keeps the client current (the
Redis subscriber, a test swapping snapshots) replaces it with one assignment.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, overload

import msgspec

from flagsync._hot_path import add_evaluation_methods
from flagsync.compile import SERVE_DEFAULT, CompiledFlag, TableEntry
from flagsync.errors import FlagsyncError
from flagsync.evaluation import ErrorCode, EvaluationDetail, Reason
from flagsync.loader import FlagSource, load_flags
from flagsync.metrics import EXPOSURES, METRIC_NAME
from flagsync.snapshot import Snapshot
from flagsync.status import ClientStatus, SyncState

if TYPE_CHECKING:
    from flagsync._sync.wiring import ConnectSettings, SyncHandle
    from flagsync.llm.config import LLMConfig
    from flagsync.llm.serve import DefaultConfig
    from flagsync.llm.tracker import LLMCall
    from flagsync.metrics import MetricsTables, MetricStat
    from flagsync.model import ModelPrice

__all__ = ["FlagClient"]

Context = Mapping[str, Any]


def _never_stale() -> bool:
    return False


class FlagClient:
    """Evaluates flags from the current snapshot; the same class serves offline and synced use.

    Every evaluation method returns the caller's `default` rather than raising: on an
    unknown flag, a flag the sync quarantined (see `ClientStatus.quarantined`), a default
    of the wrong type, a context that is not a mapping, or a rollout whose bucketing
    attribute is missing. `detail()` says which.

    JSON (object/array) values are shared with the snapshot: treat them as read-only.
    """

    __slots__ = (
        "__weakref__",
        "_is_stale",
        "_llm_configs",
        "_metrics",
        "_snapshot",
        "_sync",
        "_table",
    )
    _counts_exposures = False
    """Whether `llm_config` counts the variant it serves (a `MeteredFlagClient` does)."""

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self._snapshot = snapshot if snapshot is not None else Snapshot.empty()
        self._table: dict[str, TableEntry] = self._snapshot.entries
        self._is_stale: Callable[[], bool] = _never_stale
        self._sync: SyncHandle | None = None
        """What keeps this client current (None offline); set by `_follow` only."""
        self._metrics: MetricsTables | None = None
        self._llm_configs: dict[str, tuple[Any, Any, dict[str, LLMConfig]]] = {}
        """llm flag key -> its configs per outcome, the table entry they belong to, and
        per variant: see `flagsync.llm.serve.cached_config`."""

    @classmethod
    def offline(cls, source: FlagSource) -> FlagClient:
        """A client over fixed flags (a YAML/JSON path, a mapping or a `FlagSet`), for tests and
        local use. Raises `InvalidFlagError` listing every problem when the flags are invalid."""
        return cls(Snapshot.build(load_flags(source)))

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot evaluations currently read."""
        return self._snapshot

    @property
    def revision(self) -> int:
        """The store revision of the current snapshot (0 offline)."""
        return self._snapshot.revision

    def keys(self) -> Iterator[str]:
        """The keys of every flag in the current snapshot."""
        return iter(self._snapshot)

    if TYPE_CHECKING:  # generated from one template: see flagsync._hot_path

        def variation(self, key: str, context: Context, default: Any = None) -> Any: ...
        def bool_value(self, key: str, context: Context, default: bool) -> bool: ...
        def string_value(self, key: str, context: Context, default: str) -> str: ...
        def number_value(self, key: str, context: Context, default: float) -> float: ...
        def json_value(self, key: str, context: Context, default: Any) -> Any: ...

    def detail(self, key: str, context: Context, default: Any = None) -> EvaluationDetail:
        """The value with its variant, reason, matched rule and error code; never raises."""
        flag = self._flag(key)
        if flag is None:
            # Before the first sync the flag may well exist: say "not ready", not "not found".
            sync = self._sync
            if sync is not None and not sync.ready.is_set():
                code = ErrorCode.PROVIDER_NOT_READY
            elif self._is_quarantined(key):  # in the store, but this worker cannot use it
                code = ErrorCode.PARSE_ERROR
            else:
                code = ErrorCode.FLAG_NOT_FOUND
            return EvaluationDetail(default, None, Reason.ERROR, None, code)
        if default.__class__ not in flag.accepts:
            return EvaluationDetail(default, None, Reason.ERROR, None, ErrorCode.TYPE_MISMATCH)
        return self._explain(flag, context, default)

    def _entry(self, key: str) -> TableEntry | None:
        """The flag's entry, compiled on first use; None for an unknown (or unhashable) key."""
        try:
            return self._snapshot.entry(key)
        except TypeError:  # an unhashable key names no flag; evaluation never raises
            return None

    def _is_quarantined(self, key: str) -> bool:
        """Whether the current snapshot set flag `key` aside (see `ClientStatus.quarantined`)."""
        try:
            return key in self._snapshot.quarantine.flags
        except TypeError:  # an unhashable key names no flag
            return False

    def _flag(self, key: str) -> CompiledFlag | None:
        """The compiled flag (compiled on first use); None for an unknown (or unhashable) key."""
        try:
            return self._snapshot.flag(key)
        except TypeError:  # an unhashable key names no flag; evaluation never raises
            return None

    def _explain(self, flag: CompiledFlag, context: Context, default: Any) -> EvaluationDetail:
        try:
            index = flag.index_for(context)
            value, variant, reason, rule, error_code = flag.outcomes[index]
            self._exposed(flag, index)
        except Exception:  # noqa: BLE001 - evaluation never raises, by contract
            code = ErrorCode.GENERAL if isinstance(context, Mapping) else ErrorCode.INVALID_CONTEXT
            return EvaluationDetail(default, None, Reason.ERROR, None, code)
        if value is SERVE_DEFAULT:
            return EvaluationDetail(default, None, reason, rule, error_code)
        if self._is_stale():
            return EvaluationDetail(value, variant, Reason.STALE, rule, None, stale=True)
        return EvaluationDetail(value, variant, reason, rule, None)

    def _exposed(self, flag: CompiledFlag, index: int) -> None:
        """Hook for exposure counting (`connect(exposures=True)`); nothing offline."""

    def track(self, key: str, context: Context, metric: str, value: float = 1.0) -> None:
        """Record an outcome (`thumbs_down`, `latency_ms`, `cost`, ...) against the variant
        `context` gets for flag `key`, for guarded rollouts. Never raises; a no-op unless the
        client was connected with metrics on (the default for `connect`)."""
        tables = self._metrics
        if tables is None:
            return
        try:
            if metric == EXPOSURES or not METRIC_NAME.match(metric):
                return  # a name the stream cannot hold, or one that would fake exposures
            flag = self._flag(key)
            if flag is None or not math.isfinite(value):
                return
            tables.record(flag, flag.index_for(context), metric, float(value))
        except Exception:  # noqa: BLE001, S110 - metrics never break the request path
            pass

    # -- llm flags (`kind: llm`, see flagsync.llm) ---------------------------------

    @overload
    def llm_config(
        self,
        key: str,
        context: Context,
        default: LLMConfig | Mapping[str, Any],
        variables: Mapping[str, object] | None = None,
    ) -> LLMConfig: ...
    @overload
    def llm_config(
        self,
        key: str,
        context: Context,
        default: None = None,
        variables: Mapping[str, object] | None = None,
    ) -> LLMConfig | None: ...
    def llm_config(
        self,
        key: str,
        context: Context,
        default: DefaultConfig = None,
        variables: Mapping[str, object] | None = None,
    ) -> LLMConfig | None:
        """The `LLMConfig` an llm flag serves `context` (or `default`, as a config), its
        messages rendered with `variables` (`{{name}}`; missing ones are listed on the
        config's `problems`). Never raises; `llm_config_detail` says why a default served."""
        try:  # the common case: one evaluation and one cache hit (see flagsync.llm.serve)
            select, served, _ = self._table[key]
            configs, known, _ = self._llm_configs[key]
            if known is served:
                if select is None:
                    config = configs
                else:
                    index = select(context)
                    config = configs[index]
                    if config is not None and self._counts_exposures:
                        select.counts[index] += 1  # type: ignore[attr-defined]
                if config is not None:
                    found: LLMConfig = config
                    return found if variables is None else found.render(variables)
        except Exception:  # noqa: BLE001, S110 - first use, a miss, or an error: the slow path
            pass
        return self.llm_config_detail(key, context, default, variables).value  # type: ignore[no-any-return]

    def llm_config_detail(
        self,
        key: str,
        context: Context,
        default: DefaultConfig = None,
        variables: Mapping[str, object] | None = None,
    ) -> EvaluationDetail:
        """`llm_config` with the reason: an `EvaluationDetail` whose value is the config;
        a flag that is not `kind: llm` serves the default with `TYPE_MISMATCH`."""
        from flagsync.llm.serve import serve_detail  # noqa: PLC0415 - only llm users pay for it

        return serve_detail(self, key, context, default, variables)

    def llm_call(
        self, config: LLMConfig | None, *, prices: Mapping[str, ModelPrice] | None = None
    ) -> LLMCall:
        """`with client.llm_call(config) as call:` times one call and records latency,
        tokens, errors and cost against the flag and variant that served `config`
        (prices: `prices`, else the namespace's `llm.prices`: the flag file's offline, the
        stored section when connected, which the sync keeps current: no I/O here). `call.id`
        is for feedback."""
        from flagsync.llm.tracker import LLMCall  # noqa: PLC0415

        return LLMCall(self, config, prices=prices)

    def llm_feedback(self, call_id: str, metric: str = "thumbs_down", value: float = 1.0) -> bool:
        """Record feedback on an earlier call (of any process) by its id: the id carries
        the flag, variant and version. False when nothing could be recorded; never raises."""
        from flagsync.llm.tracker import record_feedback  # noqa: PLC0415

        return record_feedback(self, call_id, metric, value)

    def _install(self, snapshot: Snapshot) -> None:
        """Make `snapshot` current. Readers see the old or the new table, never a mix."""
        self._snapshot = snapshot
        self._table = snapshot.entries

    # -- following a store (see flagsync._sync); offline clients answer trivially --

    @classmethod
    def connect(
        cls,
        url: str | None = None,
        namespace: str = "default",
        **options: Any,
    ) -> FlagClient:
        """A client that follows `namespace` on the server at `url` (default: `REDIS_URL`).

        Returns at once with a daemon thread syncing in the background; call
        `wait_ready(timeout)` before relying on the flags. Options (seconds unless named
        otherwise) are `SyncOptions` fields: `check_interval_s`, `stale_after_s`,
        `liveness_timeout_s`, `lkg_path`, ...; `worker_id`; `presence_url` (a writable
        node for the presence record and metrics when `url` is a read-only replica); and
        the metrics options `metrics`, `exposures`, `metrics_interval_s`,
        `metrics_max_series`. Use as a context manager or call `close()`.
        """
        from flagsync._sync.wiring import ConnectSettings, start_thread_sync  # noqa: PLC0415 - lazy: no redis import offline

        settings = ConnectSettings.parse(url, namespace, options)
        client = MeteredFlagClient() if settings.exposures else cls()
        client._follow(start_thread_sync(settings, client._install, client._tables(settings)))
        return client

    @classmethod
    def connect_async(
        cls, url: str | None = None, namespace: str = "default", **options: Any
    ) -> AbstractAsyncContextManager[FlagClient]:
        """`async with FlagClient.connect_async(url) as client:` — sync in an anyio task.

        The same options as `connect`. On asyncio the task uses redis.asyncio; on other
        anyio backends (Trio) redis-py has no async client, so the task runs the
        blocking subscriber in a worker thread. Leaving the block stops it.
        """
        from flagsync._sync.wiring import ConnectSettings  # noqa: PLC0415 - lazy: no redis import offline

        settings = ConnectSettings.parse(url, namespace, options)
        client = MeteredFlagClient() if settings.exposures else cls()
        return client._follow_async(settings)

    @asynccontextmanager
    async def _follow_async(self, settings: ConnectSettings) -> AsyncIterator[FlagClient]:
        from flagsync._sync.wiring import run_async_sync  # noqa: PLC0415 - lazy: no redis import offline

        async with run_async_sync(settings, self._install, self._tables(settings)) as handle:
            self._follow(handle)
            yield self

    def _follow(self, handle: SyncHandle) -> None:
        """Be kept current by `handle` (the one place a sync attaches to a client)."""
        self._sync = handle
        self._is_stale = handle.is_stale

    def _tables(self, settings: ConnectSettings) -> MetricsTables | None:
        """The metrics tables a reporter flushes (created here), or None with metrics off."""
        if not settings.wants_metrics:
            return None
        if self._metrics is None:
            from flagsync.metrics import MetricsTables  # noqa: PLC0415 - a small pure module

            self._metrics = MetricsTables()
        return self._metrics

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the first sync with the store (True), or `timeout` seconds (False)."""
        return True if self._sync is None else self._sync.wait_ready(timeout)

    async def wait_ready_async(self, timeout: float | None = None) -> bool:
        """`wait_ready` for async code: polls without blocking the event loop."""
        return True if self._sync is None else await self._sync.wait_ready_async(timeout)

    def status(self) -> ClientStatus:
        """Sync state, revision, staleness and counters (`SyncState.OFFLINE` offline),
        with the exposures counted since start (`connect(..., exposures=True)`)."""
        if self._sync is None:
            status = ClientStatus(
                state=SyncState.OFFLINE,
                connected=False,
                namespace=None,
                epoch=self._snapshot.epoch or None,
                revision=self._snapshot.revision,
                flags=len(self._snapshot),
                seconds_since_sync=None,
            )
        else:
            status = self._sync.status()
        if self._counts_exposures and self._metrics is not None:
            exposures = self._metrics.exposure_totals()
            status = msgspec.structs.replace(status, exposures=exposures)
        return status

    def take_metrics(self) -> dict[tuple[str, str, str], MetricStat]:
        """The exposures and tracked outcomes recorded since the last take, as
        (flag, variant, metric) -> `MetricStat`, for a client no reporter flushes (an
        offline `MeteredFlagClient`: simulations, tests, in-process guards). A connected
        client's reporter takes them itself: this raises `FlagsyncError` there rather
        than steal its samples. Exposure totals stay in `status().exposures`."""
        sync = self._sync
        if sync is not None and sync.reporter is not None:
            raise FlagsyncError(
                "this client's metrics reporter flushes its metrics to the store: read them"
                " there (flagsync.guards / the metrics stream), not with take_metrics()"
            )
        return {} if self._metrics is None else self._metrics.drain()

    def is_healthy(self, max_stale_s: float | None = None) -> bool:
        """For readiness probes: synced, and confirmed within `max_stale_s` (default: grace).

        Offline clients are always healthy.
        """
        return True if self._sync is None else self._sync.is_healthy(max_stale_s)

    def add_listener(self, listener: Callable[[int, frozenset[str]], None]) -> None:
        """Call `listener(revision, changed_keys)` after every snapshot swap (change or resync).

        It runs on the subscriber (thread or task): keep it short and non-blocking; an
        exception in it is logged, not raised. Offline clients never swap, so it is never
        called there.
        """
        if self._sync is not None:
            self._sync.add_listener(listener)

    def remove_listener(self, listener: Callable[[int, frozenset[str]], None]) -> bool:
        """Stop calling a listener added with `add_listener` (True if it was registered)."""
        return False if self._sync is None else self._sync.remove_listener(listener)

    def add_state_listener(self, listener: Callable[[SyncState, SyncState], None]) -> None:
        """Call `listener(previous, current)` on every `SyncState` transition (CONNECTING →
        READY, READY → STALE, STALE → READY, ... → CLOSED).

        It runs on a small watcher thread of the sync, started with the first state
        listener: STALE is reported when the grace period ends, READY within 50 ms of a
        recovery. Keep it short; an exception in it is logged, not raised. Offline
        clients have no transitions, so it is never called there.
        """
        if self._sync is not None:
            self._sync.add_state_listener(listener)

    def remove_state_listener(self, listener: Callable[[SyncState, SyncState], None]) -> bool:
        """Stop calling a listener added with `add_state_listener` (True if it was)."""
        return False if self._sync is None else self._sync.remove_state_listener(listener)

    def close(self) -> None:
        """Stop syncing (within about a second); the last snapshot keeps being served."""
        if self._sync is not None:
            self._sync.close()

    def __enter__(self) -> FlagClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FlagClient revision={self._snapshot.revision} flags={len(self._snapshot)}>"


class MeteredFlagClient(FlagClient):
    """A `FlagClient` that also counts which variant every evaluation served (exposures).

    Returned by `FlagClient.connect(..., exposures=True)`; everything else is the same.
    The count is one list-slot increment per evaluation (the slot lives on the compiled
    flag), lock-free: under threads a racing increment can rarely be lost, so counts are
    approximate there. Flags whose outcome cannot depend on the context (no rules,
    rollout or prerequisite, or killed) serve one variant to everyone: there is nothing
    for a guard to compare, so they are not counted and cost nothing extra.
    """

    __slots__ = ()
    _counts_exposures = True

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        super().__init__(snapshot)
        from flagsync.metrics import MetricsTables  # noqa: PLC0415 - a small pure module

        # A lambda, not a bound method: it must read whichever snapshot is current.
        self._metrics = MetricsTables(lambda: self._snapshot.compiled_flags())  # noqa: PLW0108

    def _install(self, snapshot: Snapshot) -> None:
        old = self._snapshot
        super()._install(snapshot)
        if self._metrics is not None:  # counts on replaced flags are still to be flushed
            self._metrics.retire(old.compiled_flags())

    def _exposed(self, flag: CompiledFlag, index: int) -> None:
        if flag.select is not None:
            flag.counts[index] += 1


add_evaluation_methods(FlagClient, counted=False)
add_evaluation_methods(MeteredFlagClient, counted=True)
