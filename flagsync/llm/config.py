"""`LLMConfig`: what an llm flag serves, typed and frozen, with the SDKs' call shapes.

A config is built once per (flag definition, variant) and shared: serving one costs a
lookup. `render(variables)` returns a copy with the `{{name}}` placeholders of its
messages (and its fallbacks' messages) filled in. `to_openai_kwargs()` and
`to_anthropic_kwargs()` are pure: fresh plain dicts, no SDK import, no network.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import msgspec

from flagsync.errors import FlagsyncError
from flagsync.llm.params import ANTHROPIC_EFFORTS, PROVIDERS
from flagsync.llm.template import render as render_template
from flagsync.llm.validate import inherited_params

__all__ = ["LLMConfig", "LLMMessage", "config_from_variant", "flag_hash"]

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
_SYSTEM_ROLES: Final = frozenset({"system", "developer"})
_encoder: Final = msgspec.msgpack.Encoder(order="sorted")


class LLMMessage(msgspec.Struct, frozen=True):
    """One prompt message: a role (system, developer, user, assistant) and its text."""

    role: str
    content: str


class LLMConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One LLM option: the served config, or one of its fallbacks (same fields, same methods)."""

    provider: str
    model: str
    params: Mapping[str, Any] = _EMPTY
    """Parameters as the provider's SDK spells them (read-only)."""
    messages: tuple[LLMMessage, ...] = ()
    fallbacks: tuple[LLMConfig, ...] = ()
    """Options to try in order when this one fails with one of their `on` triggers."""
    on: frozenset[str] = frozenset()
    """For a fallback: the failures (`429`, `5xx`, `timeout`, ...) that move to it."""
    context_window: int | None = None
    retrieval: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = _EMPTY
    key: str | None = None
    """The flag that served this config (None for a caller's default)."""
    variant: str | None = None
    version: str | None = None
    """`<flag version>.<config hash>`: the flag's own version in the store (`0` offline;
    what `flagsync history` shows as `v<n>`) and a hash of this variant's config. It
    changes when this flag is written, never when another flag is. Log it with every
    call to know what served it."""
    problems: tuple[str, ...] = ()
    """What went wrong serving it, e.g. `missing variable 'plan'`; never raised."""

    @property
    def options(self) -> tuple[LLMConfig, ...]:
        """This config and its fallbacks, in the order a router tries them."""
        return (self, *self.fallbacks)

    @property
    def label(self) -> str:
        """`provider/model`: how cooldowns and logs name an option."""
        return f"{self.provider}/{self.model}"

    def render(self, variables: Mapping[str, object]) -> LLMConfig:
        """A copy with `{{name}}` placeholders filled from `variables` (one pass: values are
        never expanded again). Missing variables stay as written and are listed on `problems`."""
        messages, missing = _render_messages(self.messages, variables)
        problems = self.problems + tuple(f"missing variable {name!r}" for name in missing)
        fallbacks = tuple(
            option._rendered(messages, (), problems)
            if option.messages is self.messages
            else option.render(variables)
            for option in self.fallbacks
        )
        return self._rendered(messages, fallbacks, problems)

    def _rendered(
        self,
        messages: tuple[LLMMessage, ...],
        fallbacks: tuple[LLMConfig, ...],
        problems: tuple[str, ...],
    ) -> LLMConfig:
        """A copy with new messages, fallbacks and problems."""
        return msgspec.structs.replace(
            self, messages=messages, fallbacks=fallbacks, problems=problems
        )

    def to_openai_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for openai's `client.chat.completions.create(**kwargs)`."""
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in self.messages],
        }
        kwargs.update(_params_for("openai", self.provider, self.params))
        return kwargs

    def to_anthropic_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for anthropic's `client.messages.create(**kwargs)`: system and
        developer messages become the top-level `system`; `max_tokens` is required."""
        params = _params_for("anthropic", self.provider, self.params)
        if "max_tokens" not in params:
            raise FlagsyncError(
                f"{self.label}: anthropic needs params.max_tokens (or max_completion_tokens)"
            )
        kwargs: dict[str, Any] = {"model": self.model, "max_tokens": params.pop("max_tokens")}
        system = [m.content for m in self.messages if m.role in _SYSTEM_ROLES]
        if system:
            kwargs["system"] = "\n\n".join(system)
        kwargs["messages"] = [
            {"role": m.role, "content": m.content}
            for m in self.messages
            if m.role not in _SYSTEM_ROLES
        ]
        kwargs.update(params)
        return kwargs


def _render_messages(
    messages: tuple[LLMMessage, ...], variables: Mapping[str, object]
) -> tuple[tuple[LLMMessage, ...], list[str]]:
    missing: list[str] = []
    rendered: list[LLMMessage] = []
    for message in messages:
        content, absent = render_template(message.content, variables)
        same = content is message.content
        rendered.append(message if same else LLMMessage(message.role, content))
        missing.extend(name for name in absent if name not in missing)
    return tuple(rendered), missing


def _params_for(target: str, source: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """`params` (written for `source`) as `target`'s SDK takes them; deep copies, so the
    caller may change the result freely."""
    if target == source:
        return {name: copy.deepcopy(value) for name, value in params.items()}
    table = PROVIDERS[target]
    result = {name: copy.deepcopy(v) for name, v in params.items() if name in table}
    if target == "anthropic":
        if "max_tokens" not in result and "max_completion_tokens" in params:
            result["max_tokens"] = params["max_completion_tokens"]
        if "stop" in params:
            stop = params["stop"]
            result["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        if params.get("reasoning_effort") in ANTHROPIC_EFFORTS:
            result["output_config"] = {"effort": params["reasoning_effort"]}
        result.pop("service_tier", None)  # the two APIs' tiers mean different things
    else:
        if "stop_sequences" in params:
            result["stop"] = list(params["stop_sequences"])
        effort = params.get("output_config", {}).get("effort")
        if effort is not None:
            result["reasoning_effort"] = effort
        result.pop("service_tier", None)
    return result


def flag_hash(definition: object) -> str:
    """A stable content hash of a definition (sorted-key msgpack, SHA-256, 8 hex chars)."""
    return hashlib.sha256(_encoder.encode(definition)).hexdigest()[:8]


def _frozen(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({name: _frozen(item) for name, item in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    return value


def _thawed(value: Any) -> Any:
    """What the SDKs want: plain dicts and lists (a frozen config holds read-only views)."""
    if isinstance(value, Mapping):
        return {name: _thawed(item) for name, item in value.items()}
    if isinstance(value, tuple):
        return [_thawed(item) for item in value]
    return value


def config_from_variant(
    value: Mapping[str, Any],
    *,
    key: str | None = None,
    variant: str | None = None,
    flag_version: str = "",
    problems: tuple[str, ...] = (),
) -> LLMConfig:
    """The config of one validated llm variant (the flag file's shape), with its fallbacks."""
    version = f"{flag_version}.{flag_hash(value)}" if flag_version else flag_hash(value)
    params = dict(value.get("params") or {})
    messages = tuple(
        LLMMessage(str(m.get("role")), str(m.get("content"))) for m in value.get("messages") or []
    )
    window = value.get("context_window")
    retrieval = value.get("retrieval")
    extra = value.get("extra") or {}
    fallbacks = tuple(
        LLMConfig(
            provider=str(option.get("provider")),
            model=str(option.get("model")),
            params=_params_view(
                option["params"]
                if "params" in option
                else inherited_params(str(option.get("provider")), params)
            ),
            messages=messages,
            on=frozenset(str(trigger) for trigger in option.get("on") or ()),
            context_window=option.get("context_window", window),
            retrieval=None if retrieval is None else _frozen(retrieval),
            extra=_frozen(option.get("extra", extra)),
            key=key,
            variant=variant,
            version=version,
            problems=problems,
        )
        for option in value.get("fallbacks") or ()
    )
    return LLMConfig(
        provider=str(value.get("provider")),
        model=str(value.get("model")),
        params=_params_view(params),
        messages=messages,
        fallbacks=fallbacks,
        context_window=window,
        retrieval=None if retrieval is None else _frozen(retrieval),
        extra=_frozen(extra),
        key=key,
        variant=variant,
        version=version,
        problems=problems,
    )


def _params_view(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """Read-only params whose values the kwargs methods copy back to plain data."""
    return MappingProxyType({name: _thawed(value) for name, value in params.items()})
