"""The OpenFeature provider's cost per evaluation beside the native API (issue #14).

Rows, each over the same users (the rule + 50/50 rollout flag of the hot-path rows):
`variation` and `detail` (native), the provider's `resolve_string_details` called
directly (what the provider itself adds: context conversion, type check, result object,
metadata), and the OpenFeature client's `get_string_details` (the SDK's hooks, context
merging and status checks on top). Timed back to back per slice of users, in alternating
order; each ratio is the median over slices. Every row's answers are checked first.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from benchmarks._timing import Evaluate, median, ns_per_call
from flagsync import FlagClient

FLAGS: dict[str, Any] = {
    "flags": {
        "paid-split": {
            "variants": {"candidate": "gpt-4.1", "current": "gpt-4o"},
            "off": "current",
            "rules": [
                {
                    "name": "paid",
                    "when": [{"attr": "plan", "op": "in", "values": ["paid"]}],
                    "serve": {"rollout": {"candidate": 50, "current": 50}},
                }
            ],
            "default": "current",
        }
    }
}
KEY = "paid-split"
_SLICE = 100
"""Users per timed slice: ~25 us of `variation`, ~0.25 ms of the provider, so a slice is
rarely cut by the scheduler on a busy machine (longer slices inflated the slow rows)."""
RATIOS = {
    "provider_ratio_to_variation": ("provider_resolve", "variation"),
    "provider_ratio_to_detail": ("provider_resolve", "detail"),
    "sdk_ratio_to_variation": ("sdk_get_details", "variation"),
}
"""Each reported ratio: the median over slices of numerator / denominator."""


def run(users: list[dict[str, Any]], repeats: int) -> dict[str, Any] | None:
    """Measure the rows above; None when `openfeature-sdk` is not installed."""
    try:
        from openfeature import api
        from openfeature.evaluation_context import EvaluationContext

        from flagsync.openfeature import FlagsyncProvider
    except ImportError:
        return None
    client = FlagClient.offline(FLAGS)
    provider = FlagsyncProvider(client)
    domain = f"benchmark-{uuid.uuid4().hex[:8]}"
    api.set_provider_and_wait(provider, domain)
    of_client = api.get_client(domain)
    try:
        # Contexts prepared up front in each API's own shape: only evaluation is timed.
        of_users = [EvaluationContext(u["key"], {"plan": u["plan"]}) for u in users]

        def sdk(key: str, context: Mapping[str, Any], default: Any) -> Any:
            return of_client.get_string_details(key, default, context)  # type: ignore[arg-type]

        rows: dict[str, tuple[Evaluate, list[Any]]] = {
            "variation": (client.variation, users),
            "detail": (client.detail, users),
            "provider_resolve": (provider.resolve_string_details, of_users),  # type: ignore[dict-item]
            "sdk_get_details": (sdk, of_users),
        }
        _check_answers(client, provider, sdk, users, of_users)
        samples: dict[str, list[float]] = {name: [] for name in rows}
        ratios: dict[str, list[float]] = {name: [] for name in RATIOS}
        names = list(rows)
        starts = range(0, len(users), _SLICE)
        for round_number in range(repeats):
            for start in starts:
                timed: dict[str, float] = {}
                for name in names if round_number % 2 else reversed(names):
                    evaluate, contexts = rows[name]
                    part = contexts[start : start + _SLICE]
                    timed[name] = ns_per_call(evaluate, KEY, part, "fallback", 1)[0]
                    samples[name].append(timed[name])
                for ratio, (numerator, denominator) in RATIOS.items():
                    ratios[ratio].append(timed[numerator] / timed[denominator])
    finally:
        api.shutdown()
    return {
        "users": len(users),
        "rounds": repeats,
        "median_ns": {name: round(median(values), 1) for name, values in samples.items()},
        **{ratio: round(median(values), 2) for ratio, values in ratios.items()},
    }


def _check_answers(
    client: FlagClient, provider: Any, sdk: Evaluate, users: list[Any], of_users: list[Any]
) -> None:
    """Every row must serve what `variation` serves, with `detail`'s variant and reason."""
    for user, of_user in zip(users, of_users, strict=True):
        native = client.detail(KEY, user, "fallback")
        resolved = provider.resolve_string_details(KEY, "fallback", of_user)
        through_sdk = sdk(KEY, of_user, "fallback")
        found = {
            (client.variation(KEY, user, "fallback"), native.variant, str(native.reason)),
            (resolved.value, resolved.variant, str(resolved.reason)),
            (through_sdk.value, through_sdk.variant, str(through_sdk.reason)),
        }
        if len(found) != 1:
            raise AssertionError(f"openfeature: rows disagree for {user['key']}: {found}")
