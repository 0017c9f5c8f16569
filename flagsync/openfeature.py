"""An OpenFeature provider over `FlagClient`: flagsync behind the vendor-neutral API.

`pip install 'flagsync[openfeature]'`, then::

    from openfeature import api
    from flagsync.openfeature import FlagsyncProvider

    api.set_provider_and_wait(FlagsyncProvider.connect("redis://127.0.0.1:6379"))
    api.get_client().get_string_details("llm-model-version", "gpt-4o", context)

Evaluation is flagsync's (`FlagClient.detail`): the provider only translates types,
reasons and error codes, and never raises. Provider events come from the client's sync
state, pushed by the client's state and change listeners to one daemon thread (see
`ProviderEvents`): READY on the first sync,
CONFIGURATION_CHANGED per applied change, STALE when the client reports STALE, ERROR
once the store has not confirmed for `error_after_s`, READY again on recovery.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

try:
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.exception import ErrorCode as OFErrorCode
    from openfeature.exception import ProviderNotReadyError
    from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType
    from openfeature.flag_evaluation import Reason as OFReason
    from openfeature.provider import AbstractProvider, Metadata
    from openfeature.track import TrackingEventDetails
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "flagsync.openfeature needs openfeature-sdk: pip install 'flagsync[openfeature]'"
    ) from missing

from flagsync._provider_events import ProviderEvents
from flagsync.client import FlagClient
from flagsync.compile import CompiledFlag
from flagsync.errors import FlagsyncError
from flagsync.evaluation import ErrorCode, EvaluationDetail, Reason

__all__ = ["ERROR_CODES", "REASONS", "FlagsyncProvider", "ProviderOptionError", "to_context"]

REASONS: Final[Mapping[Reason, str]] = {
    Reason.STATIC: OFReason.STATIC,
    Reason.TARGETING_MATCH: OFReason.TARGETING_MATCH,
    Reason.SPLIT: OFReason.SPLIT,
    Reason.DEFAULT: OFReason.DEFAULT,
    Reason.DISABLED: OFReason.DISABLED,
    Reason.STALE: OFReason.STALE,
    Reason.ERROR: OFReason.ERROR,
    # Not in OpenFeature's list, which allows "some other string indicating the semantic
    # reason": the flag served its `off` variant because a required flag did not match.
    Reason.PREREQUISITE_FAILED: "PREREQUISITE_FAILED",
}
"""flagsync reason -> the reason an OpenFeature client reports (a test keeps it total)."""

ERROR_CODES: Final[Mapping[ErrorCode, OFErrorCode]] = {
    ErrorCode.FLAG_NOT_FOUND: OFErrorCode.FLAG_NOT_FOUND,
    ErrorCode.TYPE_MISMATCH: OFErrorCode.TYPE_MISMATCH,
    ErrorCode.TARGETING_KEY_MISSING: OFErrorCode.TARGETING_KEY_MISSING,
    ErrorCode.INVALID_CONTEXT: OFErrorCode.INVALID_CONTEXT,
    ErrorCode.PARSE_ERROR: OFErrorCode.PARSE_ERROR,
    ErrorCode.PROVIDER_NOT_READY: OFErrorCode.PROVIDER_NOT_READY,
    ErrorCode.GENERAL: OFErrorCode.GENERAL,
}
"""flagsync error code -> OpenFeature's (same names; a test keeps it total)."""

_MESSAGES: Final[Mapping[ErrorCode, str]] = {
    ErrorCode.FLAG_NOT_FOUND: "flag {key!r} is not defined in this namespace",
    ErrorCode.TYPE_MISMATCH: "flag {key!r} is not {wanted} flag",
    ErrorCode.TARGETING_KEY_MISSING: (
        "flag {key!r}: the context lacks the attribute its rollout buckets by"
    ),
    ErrorCode.INVALID_CONTEXT: "flag {key!r}: the evaluation context is not a mapping",
    ErrorCode.PARSE_ERROR: "flag {key!r}: its definition could not be parsed",
    ErrorCode.PROVIDER_NOT_READY: "flag {key!r}: no sync with the store yet",
    ErrorCode.GENERAL: "flag {key!r}: evaluation failed",
}

Checker = Callable[[Any], bool]

_METADATA_CACHE_SIZE: Final = 4096
"""Distinct (revision, rule, stale) metadata kept; cleared whole when full."""

_REFUSED: Final = object()
"""A probe default no flag accepts: flagsync answers TYPE_MISMATCH without evaluating."""


def _is_bool(value: Any) -> bool:
    return value.__class__ is bool


def _is_str(value: Any) -> bool:
    return value.__class__ is str


def _is_int(value: Any) -> bool:
    return value.__class__ is int


def _is_number(value: Any) -> bool:
    return value.__class__ is int or value.__class__ is float


def _is_structure(value: Any) -> bool:
    return value.__class__ is dict or value.__class__ is list


def to_context(evaluation_context: EvaluationContext | None) -> dict[str, Any]:
    """An OpenFeature evaluation context as a flagsync context: the attributes as they are,
    plus the targeting key as `key` (flagsync's default bucketing attribute)."""
    if evaluation_context is None:
        return {}
    context = dict(evaluation_context.attributes)
    if evaluation_context.targeting_key is not None:
        context["key"] = evaluation_context.targeting_key
    return context


class ProviderOptionError(FlagsyncError, ValueError):
    """A `FlagsyncProvider` option out of range (the message names it)."""


class FlagsyncProvider(AbstractProvider):
    """OpenFeature provider over a `FlagClient` (connected, async-connected or offline).

    Types: boolean, string and object (a JSON object or array) resolve flags of that
    kind. **integer** resolves a number flag whose variants are *all* integers; a flag
    with a float variant (even `1.0`) is a float flag, so an integer request gets
    TYPE_MISMATCH whichever variant the context would get — the answer never depends
    on the user. **float** resolves every number flag, integers converted exactly (flag
    integers are within ±2**53). A mismatch serves the caller's default, never raises.

    `flag_metadata` (read-only) carries `revision` (the store revision evaluated), `rule`
    (the matched rule, when one matched), `stale` and `namespace`.
    """

    def __init__(
        self,
        client: FlagClient,
        *,
        ready_timeout_s: float = 5.0,
        error_after_s: float = 5.0,
        track_flags: Mapping[str, Sequence[str]] | None = None,
        owns_client: bool = False,
    ) -> None:
        """Wrap `client`. `initialize` waits up to `ready_timeout_s` for its first sync
        (then raises `ProviderNotReadyError`: the SDK reports ERROR, and READY follows on
        the first sync). ERROR is emitted once the store has not confirmed the client's
        revision for `error_after_s` seconds. `track_flags` maps tracking event names to
        the flags their outcomes are attributed to. `owns_client`: `shutdown` closes it."""
        super().__init__()
        for name, value, least in (
            ("ready_timeout_s", ready_timeout_s, 0.0),
            ("error_after_s", error_after_s, 1e-3),
        ):
            if not value >= least:  # NaN included
                raise ProviderOptionError(f"{name} must be at least {least} s, got {value!r}")
        self.client = client
        self.ready_timeout_s = ready_timeout_s
        self.track_flags: dict[str, tuple[str, ...]] = {
            name: tuple(flags) for name, flags in (track_flags or {}).items()
        }
        self._owns_client = owns_client
        self._namespace = client.status().namespace or ""
        self._metadata_cache: dict[
            tuple[int, str | None, bool], Mapping[str, bool | int | float | str]
        ] = {}
        self._events = ProviderEvents(self, client, error_after_s)

    @classmethod
    def connect(
        cls,
        url: str | None = None,
        namespace: str = "default",
        *,
        ready_timeout_s: float = 5.0,
        error_after_s: float = 5.0,
        track_flags: Mapping[str, Sequence[str]] | None = None,
        **options: Any,
    ) -> FlagsyncProvider:
        """A provider over a new `FlagClient.connect(url, namespace, **options)` that it
        owns (closed by `shutdown`)."""
        client = FlagClient.connect(url, namespace, **options)
        return cls(
            client,
            ready_timeout_s=ready_timeout_s,
            error_after_s=error_after_s,
            track_flags=track_flags,
            owns_client=True,
        )

    # -- lifecycle -------------------------------------------------------------

    def get_metadata(self) -> Metadata:
        """The provider's name, as OpenFeature reports it in events."""
        return Metadata(name="flagsync")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Start the event watcher and wait for the client's first sync (see `__init__`).

        It blocks the calling thread: with a `connect_async` client, await
        `wait_ready_async` first (then this returns at once), or use `api.set_provider`,
        which calls it in a thread, so the event loop keeps syncing."""
        self._events.start()
        if self.client.wait_ready(self.ready_timeout_s):
            self._events.initialized(ready=True)
            return
        self._events.initialized(ready=False)
        raise ProviderNotReadyError(
            f"flagsync: no sync with the store within ready_timeout_s={self.ready_timeout_s}"
            " s; defaults (or the last-known-good file) are served until READY"
        )

    def shutdown(self) -> None:
        """Stop the event watcher; close the client if this provider opened it."""
        self._events.stop()
        if self._owns_client:
            self.client.close()

    # -- resolution ------------------------------------------------------------

    def _resolve(
        self,
        key: str,
        default: Any,
        evaluation_context: EvaluationContext | None,
        *,
        probe: Any,
        fits: Checker,
        wanted: str,
    ) -> FlagResolutionDetails[Any]:
        """Evaluate with `probe` as flagsync's default (its type picks the flags that may
        answer) and check the value served with `fits`; every error serves `default`."""
        try:
            detail = self.client.detail(key, to_context(evaluation_context), probe)
        except Exception:  # noqa: BLE001 - detail never raises; this guards the conversion
            detail = EvaluationDetail(None, None, Reason.ERROR, None, ErrorCode.INVALID_CONTEXT)
        code = detail.error_code
        if code is None and not fits(detail.value):
            code = ErrorCode.TYPE_MISMATCH
        if code is not None:
            return FlagResolutionDetails(
                value=default,
                error_code=ERROR_CODES[code],
                error_message=_MESSAGES[code].format(key=key, wanted=wanted),
                reason=OFReason.ERROR,
                flag_metadata=self._metadata(detail),
            )
        return FlagResolutionDetails(
            value=detail.value,
            reason=REASONS[detail.reason],
            variant=detail.variant,
            flag_metadata=self._metadata(detail),
        )

    def _metadata(self, detail: EvaluationDetail) -> Mapping[str, bool | int | float | str]:
        """`flag_metadata` for `detail`: read-only, shared by every result with the same
        revision, rule and staleness (built once: ~0.2 µs an evaluation saved)."""
        revision = self.client.revision
        key = (revision, detail.rule, detail.stale)
        cached = self._metadata_cache.get(key)
        if cached is not None:
            return cached
        metadata: dict[str, bool | int | float | str] = {
            "revision": revision,
            "namespace": self._namespace,
            "stale": detail.stale,
        }
        if detail.rule is not None:
            metadata["rule"] = detail.rule
        if len(self._metadata_cache) >= _METADATA_CACHE_SIZE:
            self._metadata_cache.clear()  # old revisions' entries go; rebuilt on demand
        frozen = self._metadata_cache[key] = MappingProxyType(metadata)
        return frozen

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        """A boolean flag's value, variant and reason; `default_value` on any error."""
        return self._resolve(
            flag_key,
            default_value,
            evaluation_context,
            probe=False,
            fits=_is_bool,
            wanted="a boolean",
        )

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        """A string flag's value, variant and reason; `default_value` on any error."""
        return self._resolve(
            flag_key, default_value, evaluation_context, probe="", fits=_is_str, wanted="a string"
        )

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        """An all-integer number flag's value (see the class docstring for `1.0`)."""
        flag = self._compiled(flag_key)
        # A float flag is refused before it is evaluated (or its exposure counted): no
        # type accepts the `_REFUSED` probe.
        probe = _REFUSED if flag is not None and flag.default_type is not int else 0
        return self._resolve(
            flag_key,
            default_value,
            evaluation_context,
            probe=probe,
            fits=_is_int,
            wanted="an all-integer number",
        )

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        """A number flag's value as a float (integers converted exactly)."""
        details = self._resolve(
            flag_key,
            default_value,
            evaluation_context,
            probe=0.0,
            fits=_is_number,
            wanted="a number",
        )
        if details.error_code is None and details.value.__class__ is int:
            details.value = float(details.value)
        return details

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        """An object or array flag's value (shared with the snapshot: treat as read-only)."""
        flag = self._compiled(flag_key)
        # None is accepted by every kind, so probe with the flag's own structure type:
        # a boolean/number/string flag is refused before it is evaluated (or counted).
        probe: Any = [] if flag is not None and flag.default_type is list else {}
        return self._resolve(
            flag_key,
            default_value,
            evaluation_context,
            probe=probe,
            fits=_is_structure,
            wanted="an object or array",
        )

    def _compiled(self, key: str) -> CompiledFlag | None:
        """The compiled flag `key` of the current snapshot, or None (never raises)."""
        try:
            return self.client.snapshot.flag(key)
        except Exception:  # noqa: BLE001 - an odd key names no flag
            return None

    # -- tracking --------------------------------------------------------------

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: EvaluationContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        """Record an outcome into flagsync's metrics (`FlagClient.track`) for guarded
        rollouts: metric `tracking_event_name`, value `details.value` (1.0 when absent),
        against the variant the context gets for each flag named by the `flag` attribute
        (a string) or the `flags` attribute (a list) of the details, else by `track_flags`.
        Never raises; a name the metrics stream cannot hold is dropped."""
        try:
            attributes = tracking_event_details.attributes if tracking_event_details else {}
            value = tracking_event_details.value if tracking_event_details else None
            named, listed = attributes.get("flag"), attributes.get("flags")
            flags: Sequence[object]
            if isinstance(named, str):
                flags = (named,)
            elif isinstance(listed, list):
                flags = listed
            else:
                flags = self.track_flags.get(tracking_event_name, ())
            context = to_context(evaluation_context)
            amount = 1.0 if value is None else float(value)
            for key in flags:
                if isinstance(key, str):
                    self.client.track(key, context, tracking_event_name, amount)
        except Exception:  # noqa: BLE001, S110 - tracking never breaks the request path
            pass
