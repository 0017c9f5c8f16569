"""LLM config flags (issue #14): `llm_config` against `json_value` on the same flag shape.

Both clients hold a rule + 50/50 rollout whose variants are the same LLM config dicts:
one as a plain JSON flag (`json_value` returns the dict), one as `kind: llm`
(`llm_config` returns the frozen `LLMConfig`). They are timed on the same slices of
users back to back, like the hot-path rows. Rendering the messages' `{{name}}`
placeholders (`variables=`) is reported separately: it builds a new config per call.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from benchmarks._timing import Evaluate, ns_per_call
from benchmarks._timing import median as median_of
from flagsync import FlagClient

CONFIGS: dict[str, Any] = {
    "current": {
        "provider": "openai",
        "model": "gpt-4o",
        "params": {"temperature": 0.2, "top_p": 1.0, "max_tokens": 800},
        "messages": [{"role": "system", "content": "You are {{product}}'s assistant ({{plan}})."}],
        "fallbacks": [{"provider": "anthropic", "model": "claude-sonnet-4", "on": [429, "5xx"]}],
        "context_window": 128000,
    },
    "candidate": {
        "provider": "openai",
        "model": "gpt-4.1",
        "params": {"temperature": 0.4, "max_tokens": 800},
        "messages": [{"role": "system", "content": "You are {{product}}'s assistant."}],
        "context_window": 128000,
    },
}
VARIABLES = {"product": "Acme", "plan": "paid"}
_SLICE = 1_000


def _document(kind: str | None) -> dict[str, Any]:
    flag: dict[str, Any] = {
        "variants": copy.deepcopy(CONFIGS),
        "off": "current",
        "rules": [
            {
                "name": "paid-ramp",
                "when": [{"attr": "plan", "op": "in", "values": ["paid", "enterprise"]}],
                "serve": {"rollout": {"candidate": 50, "current": 50}},
            }
        ],
        "default": "current",
    }
    if kind is not None:
        flag["kind"] = kind
    return {"flags": {"chat": flag}}


def run(users: list[dict[str, Any]], repeats: int) -> dict[str, Any]:
    """Median ns per call and the paired ratio `llm_config / json_value`."""
    plain = FlagClient.offline(_document(None))
    llm = FlagClient.offline(_document("llm"))
    _check(plain, llm, users)

    def rendered(key: str, context: Mapping[str, Any], default: Any) -> Any:
        return llm.llm_config(key, context, default, VARIABLES)

    rows: dict[str, Evaluate] = {
        "json_value": plain.json_value,
        "llm_config": llm.llm_config,
        "llm_config_rendered": rendered,
    }
    samples: dict[str, list[float]] = {name: [] for name in rows}
    ratios: list[float] = []
    slices = [users[start : start + _SLICE] for start in range(0, len(users), _SLICE)]
    for round_number in range(repeats):
        for part in slices:
            timed: dict[str, float] = {}
            for name in rows if round_number % 2 else reversed(list(rows)):
                default: dict[str, Any] | None = {} if name == "json_value" else None
                timed[name] = ns_per_call(rows[name], "chat", part, default, 1)[0]
                samples[name].append(timed[name])
            ratios.append(timed["llm_config"] / timed["json_value"])
    medians = {name: round(median_of(values), 1) for name, values in samples.items()}
    return {
        "median_ns": medians,
        "llm_config_ratio_to_json_value": round(median_of(ratios), 2),
        "render_ns": round(medians["llm_config_rendered"] - medians["llm_config"], 1),
    }


def _check(plain: FlagClient, llm: FlagClient, users: list[dict[str, Any]]) -> None:
    """Both flags must serve the same variant to every user, and rendering must work."""
    for user in users:
        config = llm.llm_config("chat", user, None)
        value = plain.json_value("chat", user, {})
        if config is None or value.get("model") != config.model:
            raise AssertionError(f"llm: {user['key']} got {config} vs {value}")
    sample = llm.llm_config("chat", users[0], None, VARIABLES)
    if sample is None or "{{" in sample.messages[0].content:
        raise AssertionError("llm: rendering left a placeholder")
