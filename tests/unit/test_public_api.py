"""The public surface: `flagsync.__all__` is sorted, complete and importable."""

from __future__ import annotations

import importlib
import pkgutil
import types

import pytest

import flagsync


def _public_names() -> set[str]:
    """Names `flagsync/__init__.py` binds that are meant for users (not modules or dunders)."""
    return {
        name
        for name, value in vars(flagsync).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # `from __future__ import annotations`
    }


class TestAll:
    """`__all__` matches what the package exports."""

    def test_sorted(self) -> None:
        """`__all__` is in alphabetical (case-sensitive) order, without duplicates."""
        assert flagsync.__all__ == sorted(set(flagsync.__all__))

    def test_matches_the_defined_names(self) -> None:
        """Every public name the package binds is in `__all__`, and nothing else is."""
        assert set(flagsync.__all__) == _public_names()

    @pytest.mark.parametrize("name", flagsync.__all__)
    def test_importable(self, name: str) -> None:
        """`from flagsync import <name>` works for every name in `__all__`."""
        namespace: dict[str, object] = {}
        exec(f"from flagsync import {name}", namespace)  # noqa: S102 - a fixed import statement
        assert namespace[name] is getattr(flagsync, name)

    def test_star_import(self) -> None:
        """`from flagsync import *` binds exactly `__all__`."""
        namespace: dict[str, object] = {}
        exec("from flagsync import *", namespace)  # noqa: S102 - a fixed import statement
        assert set(namespace) - {"__builtins__"} == set(flagsync.__all__)

    def test_exports_come_from_flagsync(self) -> None:
        """Each export is defined inside the package (a re-export, never a third-party name)."""
        for name in flagsync.__all__:
            value = getattr(flagsync, name)
            if isinstance(value, int | types.UnionType):  # constants and type aliases
                continue
            assert value.__module__.startswith("flagsync."), name


class TestSubmodules:
    """Public submodules declare `__all__` lists that name real objects."""

    @pytest.mark.parametrize(
        "module_name",
        sorted(
            info.name
            for info in pkgutil.iter_modules(flagsync.__path__)
            if not info.name.startswith("_")
        ),
    )
    def test_submodule_all_names_exist(self, module_name: str) -> None:
        """Every name in a public submodule's `__all__` exists in that module."""
        module = importlib.import_module(f"flagsync.{module_name}")
        for name in getattr(module, "__all__", ()):
            assert hasattr(module, name), f"flagsync.{module_name}.{name}"
