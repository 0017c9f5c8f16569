"""`{{name}}` substitution: no code, no attribute access, no surprises.

A placeholder is `{{name}}` (spaces inside the braces allowed) where `name` is a
Python-identifier-like word. Rendering is one pass over the template: a value that
itself contains `{{x}}` is inserted as text, never expanded again. A variable the
caller did not give leaves its placeholder in place and is reported, never raised.
Single braces are ordinary text (JSON examples in prompts stay as written); a `{{`
that does not open a well-formed placeholder is refused when the flag is validated.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Final

__all__ = ["PLACEHOLDER", "render", "template_problems", "variables_of"]

PLACEHOLDER: Final = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}")
_OPENING: Final = re.compile(r"\{\{")


def variables_of(template: str) -> tuple[str, ...]:
    """The variable names a template uses, in order of first use."""
    return tuple(dict.fromkeys(PLACEHOLDER.findall(template)))


def template_problems(template: str) -> list[str]:
    """Every `{{` that does not open a well-formed `{{name}}` placeholder."""
    problems: list[str] = []
    position = 0
    while True:
        opening = _OPENING.search(template, position)
        if opening is None:
            return problems
        start = opening.start()
        placeholder = PLACEHOLDER.match(template, start)
        if placeholder is None:
            excerpt = template[start : start + 24]
            problems.append(
                f"malformed template variable at offset {start}: {excerpt!r} "
                "(want {{name}} with a-z, A-Z, 0-9, _ and no spaces inside the name)"
            )
            position = start + 2
        else:
            position = placeholder.end()


def render(template: str, variables: Mapping[str, object]) -> tuple[str, tuple[str, ...]]:
    """The template with every known variable substituted (as `str(value)`), and the
    names of the variables that were missing (their placeholders are left as written)."""
    parts = _parts(template)
    if len(parts) == 1:
        return template, ()
    missing: list[str] = []
    out: list[str] = []
    for index, part in enumerate(parts):
        if not index % 2:
            out.append(part)
            continue
        name, written = part.split("\x00", 1)
        if name in variables:
            value = variables[name]
            out.append(value if isinstance(value, str) else str(value))
        else:
            out.append(written)
            if name not in missing:
                missing.append(name)
    return "".join(out), tuple(missing)


@functools.lru_cache(maxsize=1024)
def _parts(template: str) -> tuple[str, ...]:
    """Literal text and placeholders alternating (`name\\x00{{ name }}` at odd indices),
    parsed once per template text."""
    parts: list[str] = []
    position = 0
    for match in PLACEHOLDER.finditer(template):
        parts.append(template[position : match.start()])
        parts.append(f"{match.group(1)}\x00{match.group(0)}")
        position = match.end()
    parts.append(template[position:])
    return tuple(parts)
