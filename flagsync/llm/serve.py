"""Serving llm flags from a `FlagClient`: the slow path behind `llm_config` and the
explained path `llm_config_detail`, plus recording outcomes against a served variant.

`FlagClient.llm_config` itself only evaluates the flag and looks the served variant's
config up in a per-client cache; everything that builds, explains or falls back to the
caller's default lives here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flagsync.errors import InvalidFlagError
from flagsync.evaluation import ErrorCode, EvaluationDetail, Reason
from flagsync.llm.config import LLMConfig, config_from_variant
from flagsync.llm.validate import check_llm_flag
from flagsync.metrics import EXPOSURES, METRIC_NAME
from flagsync.model import Flag

if TYPE_CHECKING:
    from flagsync.client import FlagClient
    from flagsync.compile import CompiledFlag

__all__ = ["DefaultConfig", "as_default", "cached_config", "record_outcome", "serve_detail"]

DefaultConfig = LLMConfig | Mapping[str, Any] | None
"""What a caller may pass as the default: a config, a variant in the file's shape, or None."""


def serve_detail(
    client: FlagClient,
    key: str,
    context: Mapping[str, Any],
    default: DefaultConfig,
    variables: Mapping[str, object] | None,
) -> EvaluationDetail:
    """The config `context` gets (or the default) with the reason; never raises."""
    try:
        detail = client.detail(key, context, None)
        if detail.variant is None:
            code = detail.error_code or ErrorCode.GENERAL
            return _default(default, variables, detail.reason, code, detail.rule)
        snapshot = client.snapshot
        flag = snapshot.flag(key)
        if flag is None or flag.definition.kind != "llm":
            return _default(default, variables, Reason.ERROR, ErrorCode.TYPE_MISMATCH, None)
        config = cached_config(client, key, flag, detail.variant, snapshot.versions.get(key, 0))
        if variables is not None:
            config = config.render(variables)
        return EvaluationDetail(
            config, detail.variant, detail.reason, detail.rule, None, stale=detail.stale
        )
    except Exception:  # noqa: BLE001 - evaluation never raises, by contract
        return _default(default, variables, Reason.ERROR, ErrorCode.GENERAL, None)


def cached_config(
    client: FlagClient, key: str, flag: CompiledFlag, variant: str, version: int
) -> LLMConfig:
    """The config of `variant` of compiled llm flag `flag` (at store version `version`,
    0 offline), from the client's cache.

    The cache holds, per flag key, the configs of every outcome in the compiled flag's
    order, beside the very `served` object of its table entry: `llm_config` checks that
    identity (a new snapshot compiles a new entry) and indexes the configs with the
    outcome index, which costs what `json_value` costs plus one dict lookup."""
    cached = client._llm_configs.get(key)
    served = flag.entry[1]
    if cached is None or cached[1] is not served:
        by_variant = {
            name: config_from_variant(value, key=key, variant=name, flag_version=str(version))
            for name, value in flag.definition.variants.items()
        }
        outcomes = tuple(
            None if outcome.variant is None else by_variant[outcome.variant]
            for outcome in flag.outcomes
        )
        configs: Any = outcomes[0] if flag.select is None else outcomes
        cached = client._llm_configs[key] = (configs, served, by_variant)
    config: LLMConfig = cached[2][variant]
    return config


def as_default(default: DefaultConfig) -> LLMConfig | None:
    """The caller's default as a config; a mapping is read in the file's shape and its
    validation problems are listed on `problems` (a default is never refused)."""
    if default is None or isinstance(default, LLMConfig):
        return default
    flag = Flag(kind="llm", variants={"default": dict(default)}, off="default", default="default")
    problems = tuple(str(issue) for issue in check_llm_flag("default", flag))
    try:
        return config_from_variant(default, problems=problems)
    except (InvalidFlagError, TypeError, AttributeError, ValueError):
        return None


def _default(
    default: DefaultConfig,
    variables: Mapping[str, object] | None,
    reason: Reason,
    code: ErrorCode,
    rule: str | None,
) -> EvaluationDetail:
    config = as_default(default)
    if config is not None and variables is not None:
        config = config.render(variables)
    return EvaluationDetail(config, None, reason, rule, code)


def record_outcome(client: FlagClient, key: str, variant: str, metric: str, value: float) -> bool:
    """Add `value` of `metric` to the (flag, variant) series the guards read, the way
    `client.track` does; False when there is nowhere to record it (metrics off, an
    unknown flag, or a variant the flag no longer has)."""
    tables = client._metrics
    if tables is None or metric == EXPOSURES or not METRIC_NAME.match(metric):
        return False
    if not math.isfinite(value):
        return False
    flag = client._flag(key)
    if flag is None:
        return False
    for index, outcome in enumerate(flag.outcomes):
        if outcome.variant == variant:
            tables.record(flag, index, metric, float(value))
            return True
    # A flag whose outcomes never name the variant (e.g. killed): record on the first
    # outcome would mislabel it, so the sample is dropped.
    return False
