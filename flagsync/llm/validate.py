"""Validation of `kind: llm` flags: every problem in every variant, with its path.

Called by `flagsync._validation.check_flag` for flags with a `kind`, so the CLI, the
Publisher and a worker loading the store all refuse the same configs. Paths read like
the file: `flags.chat-llm.variants.current.fallbacks[0].params.temperature`.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator, Mapping
from typing import Any, Final, TypeGuard

import msgspec

from flagsync.errors import ValidationIssue
from flagsync.llm.params import PROVIDER_SDK, PROVIDERS, REQUIRED, param_problem
from flagsync.llm.template import template_problems
from flagsync.model import Flag, LLMSettings

__all__ = [
    "FALLBACK_TRIGGERS",
    "KINDS",
    "ROLES",
    "check_llm_flag",
    "check_llm_settings",
    "check_models",
    "inherited_params",
    "parse_llm_section",
    "trigger_problem",
]

KINDS: Final = frozenset({"llm"})
ROLES: Final = ("system", "developer", "user", "assistant")
FALLBACK_TRIGGERS: Final = ("429", "5xx", "timeout", "connection_error", "context_length")
"""Words a fallback's `on:` may hold, besides any HTTP status code (400-599): a fixed
vocabulary (a class like `4xx` is not in it: a 4xx other than 429 is a
fault of the request, which another provider would refuse too; list the code)."""
_VARIANT_FIELDS: Final = (
    "provider", "model", "params", "messages", "fallbacks", "context_window", "retrieval", "extra"
)  # fmt: skip
_FALLBACK_FIELDS: Final = ("provider", "model", "params", "on", "context_window", "extra")
_RETRIEVAL_FIELDS: Final = ("strategy", "top_k", "score_threshold")
_MAX_TOKEN_PARAMS: Final = ("max_tokens", "max_completion_tokens")
MAX_MESSAGES: Final = 100
MAX_CONTENT_CHARS: Final = 100_000
MAX_FALLBACKS: Final = 10


def check_llm_flag(at: str, flag: Flag) -> list[ValidationIssue]:
    """Every problem of a flag with a `kind` (only `llm` is known)."""
    if flag.kind not in KINDS:
        return [ValidationIssue(f"{at}.kind", f"unknown kind {flag.kind!r} (known: llm)")]
    issues: list[ValidationIssue] = []
    for name, value in flag.variants.items():
        issues.extend(_check_variant(f"{at}.variants.{name}", value))
    return issues


def _check_variant(at: str, value: object) -> Iterator[ValidationIssue]:
    if not isinstance(value, Mapping):
        yield ValidationIssue(at, f"an llm variant is a mapping, got {_type_name(value)}")
        return
    yield from _unknown_fields(at, value, _VARIANT_FIELDS)
    provider = yield from _provider_and_model(at, value)
    window = value.get("context_window")
    if window is not None and (not _is_int(window) or window < 1):
        yield ValidationIssue(f"{at}.context_window", f"expected a positive integer: {window!r}")
        window = None
    params = value.get("params", {})
    if not isinstance(params, Mapping):
        yield ValidationIssue(f"{at}.params", f"expected a mapping, got {_type_name(params)}")
        params = {}
    elif provider is not None:
        yield from _check_params(f"{at}.params", provider, params, window)
    yield from _check_messages(f"{at}.messages", value.get("messages", []))
    yield from _check_retrieval(f"{at}.retrieval", value.get("retrieval"))
    yield from _check_extra(f"{at}.extra", value.get("extra"))
    fallbacks = value.get("fallbacks", [])
    if not isinstance(fallbacks, list):
        yield ValidationIssue(f"{at}.fallbacks", f"expected a list, got {_type_name(fallbacks)}")
        return
    if len(fallbacks) > MAX_FALLBACKS:
        yield ValidationIssue(f"{at}.fallbacks", f"more than {MAX_FALLBACKS} fallbacks")
    for index, fallback in enumerate(fallbacks):
        yield from _check_fallback(f"{at}.fallbacks[{index}]", fallback, params, window)


def _check_fallback(
    at: str, value: object, primary_params: Mapping[str, Any], primary_window: int | None
) -> Iterator[ValidationIssue]:
    if not isinstance(value, Mapping):
        yield ValidationIssue(at, f"a fallback is a mapping, got {_type_name(value)}")
        return
    yield from _unknown_fields(at, value, _FALLBACK_FIELDS)
    provider = yield from _provider_and_model(at, value)
    window = value.get("context_window", primary_window)
    if "context_window" in value and (not _is_int(window) or window < 1):
        yield ValidationIssue(f"{at}.context_window", f"expected a positive integer: {window!r}")
        window = None
    triggers = value.get("on")
    if not isinstance(triggers, list) or not triggers:
        yield ValidationIssue(
            f"{at}.on", "list the failures that move to this fallback, e.g. [429, 5xx, timeout]"
        )
    else:
        for index, trigger in enumerate(triggers):
            problem = trigger_problem(trigger)
            if problem is not None:
                yield ValidationIssue(f"{at}.on[{index}]", problem)
    yield from _check_extra(f"{at}.extra", value.get("extra"))
    if provider is None:
        return
    if "params" in value:
        own = value["params"]
        if not isinstance(own, Mapping):
            yield ValidationIssue(f"{at}.params", f"expected a mapping, got {_type_name(own)}")
            return
        yield from _check_params(f"{at}.params", provider, own, window)
        return
    # No params of its own: it takes the primary's where valid for its provider.
    inherited = inherited_params(provider, primary_params)
    for name in REQUIRED[provider]:
        if name not in inherited:
            yield ValidationIssue(
                f"{at}.params",
                f"{PROVIDER_SDK[provider]} requires {name!r} and the primary's params do not "
                f"give one it takes: set params.{name} on this fallback",
            )
    yield from _window_problems(f"{at}.params", inherited, window)


def inherited_params(provider: str, primary: Mapping[str, Any]) -> dict[str, Any]:
    """The primary's params a fallback on `provider` takes (valid there, as they are)."""
    table = PROVIDERS.get(provider, {})
    taken = {
        name: value
        for name, value in primary.items()
        if name in table and param_problem(provider, name, value) is None
    }
    if provider == "anthropic" and "max_tokens" not in taken:
        limit = primary.get("max_completion_tokens")
        if _is_int(limit) and limit >= 1:
            taken["max_tokens"] = limit
    return taken


def trigger_problem(trigger: object) -> str | None:
    """Why `trigger` is not a fallback trigger (None if it is)."""
    text = str(trigger) if _is_int(trigger) else trigger
    if not isinstance(text, str):
        return f"expected a status code or one of {', '.join(FALLBACK_TRIGGERS)}, got {trigger!r}"
    if text in FALLBACK_TRIGGERS:
        return None
    if text.isdigit() and len(text) == 3 and 400 <= int(text) <= 599:
        return None
    return f"unknown trigger {trigger!r}: use an HTTP status 400-599 or one of " + ", ".join(
        FALLBACK_TRIGGERS
    )


def _provider_and_model(
    at: str, value: Mapping[str, Any]
) -> Generator[ValidationIssue, None, str | None]:
    """Check `provider` and `model`; the generator's return value is the known provider."""
    provider = value.get("provider")
    known: str | None = None
    if provider is None:
        yield ValidationIssue(f"{at}.provider", "required (one of: " + ", ".join(PROVIDERS) + ")")
    elif provider not in PROVIDERS:
        yield ValidationIssue(
            f"{at}.provider", f"unknown provider {provider!r} (known: {', '.join(PROVIDERS)})"
        )
    else:
        known = provider
    model = value.get("model")
    if not isinstance(model, str) or not model.strip() or len(model) > 200:
        yield ValidationIssue(f"{at}.model", f"expected a model name, got {model!r}")
    return known


def _check_params(
    at: str, provider: str, params: Mapping[str, Any], window: int | None
) -> Iterator[ValidationIssue]:
    for name, value in params.items():
        problem = param_problem(provider, str(name), value)
        if problem is not None:
            yield ValidationIssue(f"{at}.{name}", problem)
    for name in REQUIRED[provider]:
        if name not in params:
            yield ValidationIssue(f"{at}.{name}", f"required by {PROVIDER_SDK[provider]}")
    yield from _window_problems(at, params, window)


def _window_problems(
    at: str, params: Mapping[str, Any], window: int | None
) -> Iterator[ValidationIssue]:
    if window is None:
        return
    for name in _MAX_TOKEN_PARAMS:
        limit = params.get(name)
        if _is_int(limit) and limit >= window:
            yield ValidationIssue(
                f"{at}.{name}", f"{limit} must be below the context window ({window})"
            )


def _check_messages(at: str, messages: object) -> Iterator[ValidationIssue]:
    if not isinstance(messages, list):
        yield ValidationIssue(at, f"expected a list, got {_type_name(messages)}")
        return
    if len(messages) > MAX_MESSAGES:
        yield ValidationIssue(at, f"more than {MAX_MESSAGES} messages")
    for index, message in enumerate(messages):
        here = f"{at}[{index}]"
        if not isinstance(message, Mapping):
            yield ValidationIssue(here, f"expected {{role, content}}, got {_type_name(message)}")
            continue
        yield from _unknown_fields(here, message, ("role", "content"))
        role = message.get("role")
        if role not in ROLES:
            yield ValidationIssue(
                f"{here}.role", f"unknown role {role!r} (known: {', '.join(ROLES)})"
            )
        content = message.get("content")
        if not isinstance(content, str):
            yield ValidationIssue(f"{here}.content", f"expected text, got {_type_name(content)}")
            continue
        if len(content) > MAX_CONTENT_CHARS:
            yield ValidationIssue(f"{here}.content", f"longer than {MAX_CONTENT_CHARS} chars")
        for problem in template_problems(content):
            yield ValidationIssue(f"{here}.content", problem)


def _check_retrieval(at: str, retrieval: object) -> Iterator[ValidationIssue]:
    if retrieval is None:
        return
    if not isinstance(retrieval, Mapping):
        yield ValidationIssue(at, f"expected a mapping, got {_type_name(retrieval)}")
        return
    yield from _unknown_fields(at, retrieval, _RETRIEVAL_FIELDS)
    strategy = retrieval.get("strategy")
    if not isinstance(strategy, str) or not strategy:
        yield ValidationIssue(f"{at}.strategy", f"expected a strategy name, got {strategy!r}")
    top_k = retrieval.get("top_k")
    if top_k is not None and (not _is_int(top_k) or not 1 <= top_k <= 10_000):
        yield ValidationIssue(f"{at}.top_k", f"expected an integer in 1..10000, got {top_k!r}")
    threshold = retrieval.get("score_threshold")
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0 <= threshold <= 1
    ):
        yield ValidationIssue(f"{at}.score_threshold", f"expected 0..1, got {threshold!r}")


def _check_extra(at: str, extra: object) -> Iterator[ValidationIssue]:
    if extra is not None and not isinstance(extra, Mapping):
        yield ValidationIssue(at, f"expected a mapping, got {_type_name(extra)}")


def _unknown_fields(
    at: str, value: Mapping[str, Any], known: tuple[str, ...]
) -> Iterator[ValidationIssue]:
    for name in value:
        if name not in known:
            hint = " (put it under extra:)" if "extra" in known else ""
            yield ValidationIssue(f"{at}.{name}", f"unknown field{hint}; known: {', '.join(known)}")


def parse_llm_section(
    raw: object, flags: Mapping[str, Flag], issues: list[ValidationIssue]
) -> LLMSettings | None:
    """A document's `llm:` section, checked (with the flags' models against its allow-list);
    problems go to `issues`. None when the section is absent or unreadable."""
    if raw is None:
        return None
    try:
        settings = msgspec.convert(raw, LLMSettings)
    except msgspec.ValidationError as error:
        issues.append(ValidationIssue("llm", str(error).replace(" - at `$", " at `llm")))
        return None
    issues.extend(check_llm_settings(settings))
    issues.extend(check_models(flags, settings))
    return settings


def check_llm_settings(settings: LLMSettings) -> list[ValidationIssue]:
    """Problems of a file's `llm:` section (unknown providers, empty names, bad prices)."""
    issues: list[ValidationIssue] = []
    for provider, models in settings.models.items():
        if provider not in PROVIDERS:
            issues.append(
                ValidationIssue(f"llm.models.{provider}", f"unknown provider {provider!r}")
            )
        issues.extend(
            ValidationIssue(f"llm.models.{provider}[{index}]", "expected a model name")
            for index, model in enumerate(models)
            if not model.strip()
        )
    for model, price in settings.prices.items():
        for field in ("input_per_mtok", "output_per_mtok"):
            amount = getattr(price, field)
            if not math.isfinite(amount) or amount < 0:
                issues.append(
                    ValidationIssue(f"llm.prices.{model}.{field}", f"{amount!r} is not a price")
                )
    return issues


def check_models(flags: Mapping[str, Flag], settings: LLMSettings | None) -> list[ValidationIssue]:
    """Every model an llm flag names (primary or fallback) that its provider's allow-list
    (`llm.models`) does not hold; providers without a list allow any model."""
    if settings is None or not settings.models:
        return []
    issues: list[ValidationIssue] = []
    for key, flag in flags.items():
        if flag.kind != "llm":
            continue
        for name, variant in flag.variants.items():
            at = f"flags.{key}.variants.{name}"
            if not isinstance(variant, Mapping):
                continue
            options = [(at, variant)] + [
                (f"{at}.fallbacks[{index}]", fallback)
                for index, fallback in enumerate(variant.get("fallbacks") or [])
                if isinstance(fallback, Mapping)
            ]
            for here, option in options:
                allowed = settings.models.get(str(option.get("provider")))
                if allowed is not None and option.get("model") not in allowed:
                    issues.append(
                        ValidationIssue(
                            f"{here}.model",
                            f"{option.get('model')!r} is not in llm.models.{option['provider']}"
                            f" ({', '.join(allowed) or 'empty'})",
                        )
                    )
    return issues


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__
