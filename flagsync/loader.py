"""Read flag documents from YAML or JSON files, or take them from plain dicts.

Files are parsed strictly, because a lenient parser silently changes flags:
duplicate keys are errors (not "last one wins"), YAML follows the 1.2 core schema for
booleans (`on`/`off`/`yes`/`no` stay strings, since they are common variant names), and
YAML aliases are refused (they can expand a small file into a huge document). A document
nested deeper than `MAX_DEPTH` levels or holding an integer msgpack cannot store is refused
with the path of the offending value, before anything recursive looks at it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from flagsync._validation import int_problem, parse_flagset
from flagsync.errors import InvalidFlagError, ValidationIssue
from flagsync.model import FlagSet

__all__ = ["FlagSource", "check_shape", "load_flags", "parse_document", "read_file"]

MAX_FILE_BYTES: Final = 64 * 1024 * 1024
MAX_DEPTH: Final = 64
"""Nesting limit of a whole document (flag values themselves are limited to 32 levels)."""

FlagSource = str | os.PathLike[str] | Mapping[str, Any] | FlagSet
"""Where flags come from: a YAML/JSON file path, a plain mapping, or a parsed `FlagSet`."""


def load_flags(source: FlagSource) -> FlagSet:
    """A validated `FlagSet` from a file path, a mapping or a `FlagSet`.

    Raises `InvalidFlagError` listing every problem (with its path) when anything is
    wrong; nothing partial is ever returned.
    """
    if isinstance(source, FlagSet):
        return parse_flagset(source)
    if isinstance(source, Mapping):
        check_shape(source, "")
        return parse_flagset(source)
    return parse_flagset(read_file(Path(source)))


def read_file(path: Path) -> object:
    """The raw document in a flag file, parsed by its suffix (`.json`, else YAML)."""
    where = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InvalidFlagError(
                [ValidationIssue(where, f"file is {size} bytes, over {MAX_FILE_BYTES}")]
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidFlagError([ValidationIssue(where, f"cannot read: {error}")]) from error
    return parse_document(text, "json" if path.suffix.lower() == ".json" else "yaml", where)


def parse_document(text: str, syntax: str, where: str = "<text>") -> object:
    """Parse YAML or JSON text strictly; syntax errors, nesting deeper than `MAX_DEPTH` and
    integers out of range become `InvalidFlagError`."""
    try:
        if syntax == "json":
            document = json.loads(
                text, object_pairs_hook=_unique_pairs, parse_constant=_no_constant
            )
        else:
            document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise InvalidFlagError(
            [ValidationIssue(where, f"invalid {syntax}: nested deeper than {MAX_DEPTH} levels")]
        ) from None
    except yaml.MarkedYAMLError as error:
        raise InvalidFlagError([ValidationIssue(where, _yaml_message(error))]) from error
    except (ValueError, yaml.YAMLError) as error:
        raise InvalidFlagError([ValidationIssue(where, f"invalid {syntax}: {error}")]) from error
    check_shape(document, where)
    return document


def check_shape(value: object, where: str, *, max_depth: int = MAX_DEPTH) -> None:
    """Refuse nesting deeper than `max_depth` and integers msgpack cannot store, naming the
    path of the first offending value (walked without recursion, so any depth is safe).

    A first walk builds no paths, so a valid document (the usual case) costs one visit per
    value; only a refused one is walked again to name the place.
    """
    if _shape_is_fine(value, max_depth):
        return
    stack: list[tuple[object, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        problem = int_problem(item)
        if problem is not None:
            raise InvalidFlagError.single(_join(where, path), problem)
        children: list[tuple[object, str]] = []
        if isinstance(item, Mapping):
            children = [(child, f"{path}.{key}") for key, child in item.items()]
        elif isinstance(item, list | tuple):
            children = [(child, f"{path}[{index}]") for index, child in enumerate(item)]
        if children and depth >= max_depth:
            raise InvalidFlagError.single(
                _join(where, path), f"nested deeper than {max_depth} levels"
            )
        stack.extend((child, child_path, depth + 1) for child, child_path in reversed(children))


def _shape_is_fine(value: object, max_depth: int) -> bool:
    """Whether `value` is within `max_depth` and holds only storable integers."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Iterable[object] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            if int_problem(item) is not None:
                return False
            continue
        if depth >= max_depth and len(item):
            return False
        for child in children:
            kind = child.__class__
            if kind is str or kind is float or kind is bool or child is None:
                continue  # the common leaves, without a call
            stack.append((child, depth + 1))
    return True


def _join(where: str, path: str) -> str:
    """`file.yaml at flags.x.variants.a`, or only one of them when the other is empty."""
    path = path.lstrip(".")
    if len(path) > 120:  # a path 64 levels deep: its start says where
        path = path[:120] + "..."
    if where and path:
        return f"{where} at {path}"
    return where or path or "<document>"


def _yaml_message(error: yaml.MarkedYAMLError) -> str:
    """`invalid yaml: <what> (line L, column C)`: PyYAML's own text names the stream
    `"<unicode string>"`, and the file is already the issue's path."""
    mark = error.problem_mark or error.context_mark
    what = (
        "; ".join(part for part in (error.context, error.problem) if part) or type(error).__name__
    )
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"invalid yaml: {what}{where}"


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans, no duplicate keys and no aliases."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "aliases are not allowed in flag files", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool | None):
                raise yaml.constructor.ConstructorError(
                    None, None, f"unsupported mapping key {key!r}", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Replace YAML 1.1's boolean words (yes/no/on/off/y/n) by YAML 1.2's true/false only.
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)
