"""The evaluation methods of both clients, generated from one template.

`variation`, the typed getters (`bool_value`, `string_value`, ...) and their metered
twins differ in two places only: which test refuses the caller's default, and whether
the served outcome is counted. Written by hand that is ten near-copies to keep in step;
as closures or a shared helper it costs a second Python call per evaluation (a third of
the budget). So the body is written once, below, and each method is generated from it
with its test and its counting filled in.

The fast path is one dict lookup and one tuple unpack (see `compile.TableEntry`). A
flag that is not compiled yet (or unknown) misses the table, raises KeyError, and the
same body runs on the entry the snapshot compiles for it. A rollout without its
bucketing attribute raises `TargetingKeyMissing` from the selector: the caller's
default, at no cost to the other evaluations (3.11's `try` is free until raised).

Safety: the generated source is made only from the fixed strings in this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, NamedTuple

from flagsync._selector import TargetingKeyMissing
from flagsync.compile import ACCEPTED_BY_USUAL_TYPE

__all__ = ["add_evaluation_methods"]

_UNPACK: Final = "select, served, usual = "

_BODY: Final = """\
if {refuse}:
    return default
if select is None:
    return served
{pick}
"""

_TEMPLATE: Final = """\
def {name}(self, key, context, default{default_value}):
    try:
        {unpack}self._table[key]
{body_fast}
    except KeyError:  # not compiled yet, or unknown (then unpacking None fails below)
        try:
            {unpack}self._entry(key)
{body_first_use}{missing_first_use}
        except Exception:
            return default{missing}
    except Exception:
        return default
"""

_PICK: Final = "return served[select(context)]"
_PICK_COUNTED: Final = """\
index = select(context)
select.counts[index] += 1
return served[index]"""
"""Static flags returned above: one variant for everyone, nothing for a guard to compare."""


_MISSING: Final = """\
except _TargetingKeyMissing as missing:  # no bucketing key: the caller's default
    select.counts[missing.index] += 1
    return default"""
"""What a counted method adds: the default served for want of a key counts too."""


class _Method(NamedTuple):
    refuse: str
    """When the caller's default is served instead (an expression over the entry)."""
    default_value: str
    doc: str


_METHODS: Final[dict[str, _Method]] = {
    "variation": _Method(
        # The usual default type first: one identity test for the common call.
        "default.__class__ is not usual and default is not None"
        " and default.__class__ not in _ACCEPTED[usual]",
        "=None",
        """The flag's value for `context`, or `default`.

        When `default` is not None it also states the expected JSON type: a flag of
        another type serves `default` (see `detail()` for the reason).
        """,
    ),
    "bool_value": _Method(
        "usual is not bool",
        "",
        "A boolean flag's value, or `default` (also when the flag is not boolean).",
    ),
    "string_value": _Method(
        "usual is not str",
        "",
        "A string flag's value, or `default` (also when the flag is not a string).",
    ),
    "number_value": _Method(
        "usual is not int and usual is not float",
        "",
        "A number flag's value (int or float), or `default` (also when it is not a number).",
    ),
    "json_value": _Method(
        "usual is not dict and usual is not list",
        "",
        "An object or array flag's value, or `default` (also for boolean/number/string flags).",
    ),
}


def method_source(name: str, *, counted: bool) -> str:
    """The generated source of evaluation method `name` (for reading and for tests)."""
    method = _METHODS[name]
    body = _BODY.format(refuse=method.refuse, pick=_PICK_COUNTED if counted else _PICK)
    return _TEMPLATE.format(
        name=name,
        default_value=method.default_value,
        unpack=_UNPACK,
        body_fast=_indent(body, 2),
        body_first_use=_indent(body, 3),
        missing="\n" + _indent(_MISSING, 1) if counted else "",
        missing_first_use="\n" + _indent(_MISSING, 2) if counted else "",
    )


def add_evaluation_methods(cls: type, *, counted: bool) -> None:
    """Give `cls` every evaluation method, counting exposures when `counted`."""
    for name, method in _METHODS.items():
        namespace: dict[str, Any] = {
            "_ACCEPTED": ACCEPTED_BY_USUAL_TYPE,
            "_TargetingKeyMissing": TargetingKeyMissing,
        }
        code = compile(method_source(name, counted=counted), f"<flagsync {name}>", "exec")
        exec(code, namespace)  # noqa: S102 - generated from this module's fixed strings
        function: Callable[..., Any] = namespace[name]
        function.__doc__ = method.doc
        function.__module__ = cls.__module__
        function.__qualname__ = f"{cls.__qualname__}.{name}"
        setattr(cls, name, function)


def _indent(text: str, levels: int) -> str:
    pad = "    " * levels
    return "".join(pad + line for line in text.splitlines(keepends=True)).rstrip("\n")
