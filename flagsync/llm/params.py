"""What each provider's chat call accepts: the parameter tables, as data.

The tables are read from the SDKs' own signatures and pinned here (a test introspects
the installed SDKs and fails if a table accepts a name the SDK does not):

- openai 3.57.0: `openai.resources.chat.completions.Completions.create`
- anthropic 2.14.0: `anthropic.resources.messages.Messages.create` (no `temperature`,
  no `top_p`; `max_tokens` is required; effort is `output_config: {effort: ...}`)

Only sampling and output controls belong in a flag; the request itself (`messages`,
`model`, `tools`, `stream`, ...) is the application's, so those names are not listed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "OPENAI_EFFORTS",
    "PROVIDERS",
    "PROVIDER_SDK",
    "ParamRule",
    "param_problem",
]


@dataclass(frozen=True, slots=True)
class ParamRule:
    """How one parameter's value is checked: a number range, an integer, a word, text."""

    kind: str
    """`number`, `int`, `choice`, `text_list` (a string or list of strings), `effort`."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """`low` itself is refused (top_p: (0, 1])."""
    choices: tuple[str, ...] = ()


def _number(low: float, high: float, *, low_open: bool = False) -> ParamRule:
    return ParamRule("number", low, high, low_open)


def _int(low: int, high: float = math.inf) -> ParamRule:
    return ParamRule("int", low, high)


def _choice(*choices: str) -> ParamRule:
    return ParamRule("choice", choices=choices)


OPENAI_EFFORTS: Final = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
ANTHROPIC_EFFORTS: Final = ("low", "medium", "high", "xhigh", "max")

PROVIDERS: Final[Mapping[str, Mapping[str, ParamRule]]] = {
    # openai 3.57.0: Completions.create
    "openai": {
        "temperature": _number(0, 2),
        "top_p": _number(0, 1, low_open=True),
        "max_tokens": _int(1),
        "max_completion_tokens": _int(1),
        "reasoning_effort": _choice(*OPENAI_EFFORTS),
        "frequency_penalty": _number(-2, 2),
        "presence_penalty": _number(-2, 2),
        "seed": _int(-(2**63), 2**63 - 1),
        "stop": ParamRule("text_list", high=4),
        "n": _int(1, 128),
        "verbosity": _choice("low", "medium", "high"),
        "service_tier": _choice("auto", "default", "flex", "scale", "priority"),
        "logprobs": _choice(),  # booleans: see param_problem
        "top_logprobs": _int(0, 20),
    },
    # anthropic 2.14.0: Messages.create
    "anthropic": {
        "max_tokens": _int(1),
        "stop_sequences": ParamRule("text_list", high=8191),
        "output_config": ParamRule("effort", choices=ANTHROPIC_EFFORTS),
        "service_tier": _choice("auto", "standard_only"),
    },
}
"""Per provider: parameter name (as the SDK spells it) -> how its value is checked."""

REQUIRED: Final[Mapping[str, tuple[str, ...]]] = {"openai": (), "anthropic": ("max_tokens",)}
"""Parameters a provider's call cannot do without."""

PROVIDER_SDK: Final[Mapping[str, str]] = {
    "openai": "openai 3.57 chat.completions.create",
    "anthropic": "anthropic 2.14 messages.create",
}
"""How messages name the API a table was read from."""

_BOOLEAN_PARAMS: Final = frozenset({"logprobs"})


def param_problem(provider: str, name: str, value: object) -> str | None:
    """Why `value` is not accepted as parameter `name` by `provider` (None if it is)."""
    rule = PROVIDERS[provider].get(name)
    if rule is None:
        hint = ""
        if provider == "anthropic" and name == "reasoning_effort":
            hint = " (use output_config: {effort: ...})"
        elif provider == "anthropic" and name == "stop":
            hint = " (use stop_sequences)"
        elif provider == "openai" and name == "stop_sequences":
            hint = " (use stop)"
        known = ", ".join(sorted(PROVIDERS[provider]))
        return f"{PROVIDER_SDK[provider]} takes no {name!r}{hint}; it takes: {known}"
    if name in _BOOLEAN_PARAMS:
        return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
    return _rule_problem(rule, value)


def _rule_problem(rule: ParamRule, value: object) -> str | None:
    if rule.kind in ("number", "int"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number, got {value!r}"
        if rule.kind == "int" and not isinstance(value, int):
            return f"expected an integer, got {value!r}"
        low = -math.inf if rule.low is None else rule.low
        high = math.inf if rule.high is None else rule.high
        if (
            not math.isfinite(value)
            or value > high
            or value < low
            or (rule.low_open and value == low)
        ):
            return f"{value!r} is outside {_range(rule)}"
        return None
    if rule.kind == "choice":
        if value not in rule.choices:
            return f"{value!r} is not one of {', '.join(rule.choices)}"
        return None
    if rule.kind == "text_list":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            return f"expected a string or a list of strings, got {value!r}"
        if rule.high is not None and len(items) > rule.high:
            return f"at most {rule.high:g} entries, got {len(items)}"
        return None
    # effort: {effort: low|...}
    if not isinstance(value, Mapping) or set(value) != {"effort"}:
        return f"expected {{effort: {'|'.join(rule.choices)}}}, got {value!r}"
    if value["effort"] not in rule.choices:
        return f"effort {value['effort']!r} is not one of {', '.join(rule.choices)}"
    return None


def _range(rule: ParamRule) -> str:
    low = "(" if rule.low_open else "["
    high_value = "inf" if rule.high is None or math.isinf(rule.high) else f"{rule.high:g}"
    return f"{low}{rule.low:g}, {high_value}]"
