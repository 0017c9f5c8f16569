"""The layout the README describes is the layout of the package, and the evaluation core
keeps the dependency rule of DESIGN.md (it imports nothing that talks to Redis)."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
PACKAGE: Final = ROOT / "flagsync"

CORE: Final = (
    "model",
    "loader",
    "_validation",
    "_bulk_load",
    "bucketing",
    "_operators",
    "_semver",
    "_selector",
    "compile",
    "snapshot",
    "_hot_path",
    "client",
    "evaluation",
    "status",
    "errors",
    "diff",
    "weights",
    "_intents",
    "_gc",
)
"""The evaluation core of DESIGN.md's dependency rule."""

REDIS_SIDE: Final = ("redis", "anyio", "flagsync.store", "flagsync._connection", "flagsync._sync")


def readme_layout() -> set[str]:
    """Every module path the README's layout list names (`cli/` and `examples/` as folders)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- layout: start.*?-->(.*?)<!-- layout: end -->", text, re.S)
    assert match is not None, "README.md has no layout section"
    return set(re.findall(r"`([a-z_/]+(?:\.py|/))`", match.group(1)))


def package_layout() -> set[str]:
    """Every module of the package, with `cli/` and `examples/` as folders."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in {"cli", "examples"}:
            names.add(f"{relative.parts[0]}/")
        elif relative.name != "__init__.py":
            names.add(relative.as_posix())
    return names


def module_imports(module: str) -> set[str]:
    """The modules `module` imports at module level (not inside functions)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            imported.add(node.module)
    return imported


class TestReadmeLayout:
    """The README's "How the code is laid out" list matches the tree."""

    def test_every_module_is_listed_and_every_listed_module_exists(self) -> None:
        """A module added, moved or removed without its README line fails here."""
        listed, present = readme_layout(), package_layout()
        assert listed - present == set(), "listed in README but not in the package"
        assert present - listed == set(), "in the package but not listed in README"


class TestDependencyRule:
    """The evaluation core never imports the Redis side (DESIGN.md, "Dependency rule")."""

    def test_core_modules_import_nothing_that_talks_to_redis(self) -> None:
        """No core module imports redis, anyio, the protocol, connections or the sync package
        at module level (`FlagClient.connect` imports the sync side lazily)."""
        offenders = {
            module: sorted(
                name
                for name in module_imports(module)
                if any(name == side or name.startswith(f"{side}.") for side in REDIS_SIDE)
            )
            for module in CORE
        }
        assert {module: names for module, names in offenders.items() if names} == {}

    def test_the_core_list_names_real_modules(self) -> None:
        """Every module named as core exists, so the rule above cannot pass vacuously."""
        assert [m for m in CORE if not (PACKAGE / f"{m}.py").is_file()] == []
