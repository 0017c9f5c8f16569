"""Relations between flags: prerequisites that name a flag or variant that is not there,
and prerequisite cycles (found by an iterative depth-first search: chains can be long).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping

from flagsync._values import is_key
from flagsync.errors import ValidationIssue
from flagsync.model import Flag

__all__ = ["cycle_issues", "find_cycles", "prerequisite_issues"]


def prerequisite_issues(
    flags: Mapping[str, Flag], declared: Collection[str]
) -> Iterator[ValidationIssue]:
    """Unknown prerequisite flags or variants, and cycles (reported once per cycle)."""
    for key, flag in flags.items():
        for other, variant in flag.requires.items():
            if other == key or not is_key(other):
                continue
            if other not in declared:
                yield ValidationIssue(f"flags.{key}.requires.{other}", f"unknown flag {other!r}")
            elif other in flags and variant not in flags[other].variants:
                yield ValidationIssue(
                    f"flags.{key}.requires.{other}", f"flag {other!r} has no variant {variant!r}"
                )
    yield from cycle_issues(flags)


def cycle_issues(flags: Mapping[str, Flag]) -> list[ValidationIssue]:
    """One issue per prerequisite cycle among `flags`."""
    return [
        ValidationIssue(
            f"flags.{cycle[0]}.requires", "prerequisite cycle: " + " -> ".join([*cycle, cycle[0]])
        )
        for cycle in find_cycles({key: flag.requires.keys() for key, flag in flags.items()})
    ]


def find_cycles(edges: Mapping[str, Collection[str]]) -> list[list[str]]:
    """Each distinct cycle in a dependency graph, found by an iterative depth-first search."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []
    for start, first in edges.items():
        if state.get(start) or not first:
            continue
        path: list[str] = []
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(edges.get(start, ())))]
        state[start] = 1
        path.append(start)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(child) == 1:
                cycles.append(path[path.index(child) :])
            elif not state.get(child) and child in edges:
                state[child] = 1
                path.append(child)
                stack.append((child, iter(edges[child])))
    return cycles
