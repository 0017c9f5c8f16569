"""`with client.llm_call(config) as call:` — one LLM call's telemetry into the rollout metrics.

Recorded per call, against the flag and variant that served `config`, through the same
path as `client.track` (so guards read them directly): `latency_ms`, `ttft_ms` (time to
first token, when marked), `tokens_in`, `tokens_out`, `tokens` (their sum: guard it as
`tokens_per_request`), `error` (0 or 1: `error_rate`) and `cost` (dollars, from the
price table: `cost_per_request`). Feedback that comes later — from this process or
another — is recorded by call id (`client.llm_feedback(call_id, "thumbs_down", 1.0)`):
the id carries the flag, variant and version, so nothing needs to be remembered.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Final

import structlog

from flagsync.llm.config import LLMConfig
from flagsync.llm.serve import record_outcome
from flagsync.model import ModelPrice

if TYPE_CHECKING:
    from flagsync.client import FlagClient

__all__ = ["CallId", "LLMCall", "parse_call_id", "record_feedback"]

_log = structlog.get_logger("flagsync.llm")
_ID: Final = re.compile(
    r"^(?P<key>[a-z0-9][a-z0-9._-]{0,127})/(?P<variant>[a-z0-9][a-z0-9._-]{0,127})"
    r"/(?P<version>[0-9a-f.]{1,40})/(?P<token>[0-9a-f]{12})\Z"
)


@dataclass(frozen=True, slots=True)
class CallId:
    """What a call id carries: the flag, the variant and the config version that served."""

    key: str
    variant: str
    version: str
    token: str

    def __str__(self) -> str:
        return f"{self.key}/{self.variant}/{self.version}/{self.token}"


def parse_call_id(call_id: str) -> CallId | None:
    """The parts of a call id made by `LLMCall`, or None when it is not one."""
    match = _ID.match(call_id) if isinstance(call_id, str) else None
    if match is None:
        return None
    return CallId(match["key"], match["variant"], match["version"], match["token"])


class LLMCall:
    """Times one call and records it on exit; an exception inside marks it an error (and
    propagates). Without a served flag (a caller's default) nothing is recorded."""

    def __init__(
        self,
        client: FlagClient,
        config: LLMConfig | None,
        *,
        prices: Mapping[str, ModelPrice] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._client = client
        self.config = config
        self._prices = prices
        self._clock = clock
        self._start = 0.0
        self._first_token: float | None = None
        self._input_tokens = 0
        self._output_tokens = 0
        self._failed = False
        self.served: LLMConfig | None = config
        """The option that answered (set with `served_by`; prices are looked up by its model)."""
        token = secrets.token_hex(6)
        self.id: str | None = None
        """`<flag>/<variant>/<version>/<random>`: give it to `llm_feedback` later."""
        if config is not None and config.key and config.variant and config.version:
            self.id = str(CallId(config.key, config.variant, config.version, token))

    def __enter__(self) -> LLMCall:
        self._start = self._clock()
        return self

    def first_token(self) -> None:
        """Mark the first streamed token (once; later calls are ignored)."""
        if self._first_token is None:
            self._first_token = self._clock()

    def usage(self, input_tokens: int, output_tokens: int) -> None:
        """The tokens the provider reported for this call (added up if called again)."""
        self._input_tokens += max(0, int(input_tokens))
        self._output_tokens += max(0, int(output_tokens))

    def served_by(self, option: LLMConfig) -> None:
        """The option (primary or fallback) that answered: costs use its model's price."""
        self.served = option

    def fail(self) -> None:
        """Count this call as an error without raising (e.g. an unusable answer)."""
        self._failed = True

    @property
    def cost(self) -> float | None:
        """Dollars for the tokens so far at the served model's price; None without one."""
        served = self.served
        prices = self._price_table()
        price = None if served is None else prices.get(served.model)
        if price is None:
            return None
        return (
            self._input_tokens * price.input_per_mtok + self._output_tokens * price.output_per_mtok
        ) / 1_000_000

    def _price_table(self) -> Mapping[str, ModelPrice]:
        if self._prices is not None:
            return self._prices
        client = self._client
        sync = client._sync  # connected: the section the sync keeps (memory, no I/O)
        settings = client.snapshot.definitions.llm if sync is None else sync.llm_settings
        return {} if settings is None else settings.prices

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        end = self._clock()
        config = self.config
        if config is None or config.key is None or config.variant is None:
            return
        failed = self._failed or exc is not None
        values = {
            "latency_ms": (end - self._start) * 1000,
            "error": 1.0 if failed else 0.0,
            "tokens_in": float(self._input_tokens),
            "tokens_out": float(self._output_tokens),
            "tokens": float(self._input_tokens + self._output_tokens),
        }
        if self._first_token is not None:
            values["ttft_ms"] = (self._first_token - self._start) * 1000
        cost = self.cost
        if cost is not None:
            values["cost"] = cost
        try:
            for metric, value in values.items():
                record_outcome(self._client, config.key, config.variant, metric, value)
        except Exception:  # noqa: BLE001 - telemetry never breaks the request path
            _log.warning("llm.track_failed", call_id=self.id)
        _log.debug(
            "llm.call",
            call_id=self.id,
            served=None if self.served is None else self.served.label,
            version=config.version,
            **values,
        )


def record_feedback(client: FlagClient, call_id: str, metric: str, value: float) -> bool:
    """Record `metric` (e.g. `thumbs_down`) for the call `call_id` names; False when the id
    is not a call id or there is nowhere to record (see `serve.record_outcome`)."""
    parsed = parse_call_id(call_id)
    if parsed is None:
        return False
    try:
        return record_outcome(client, parsed.key, parsed.variant, metric, value)
    except Exception:  # noqa: BLE001 - telemetry never breaks the request path
        return False
