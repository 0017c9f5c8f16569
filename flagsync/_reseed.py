"""What a write into a wiped namespace would take away from the workers serving it.

After a FLUSHALL (or a deleted flags hash) workers rightly keep serving their
last-known-good flags and report the snapshot missing. The first write afterwards
becomes the whole namespace: a teammate's `apply` of a one-flag file would make every
worker serve the caller's defaults for the other flags, READY and FLAG_NOT_FOUND. So
workers that find the store missing data they serve list their flag keys in their
presence record (`WorkerInfo.held`, from their next heartbeat on), and the publisher
refuses content that lacks any of them unless the operator says it is complete.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from flagsync._codec import WorkerInfo

__all__ = ["dropped_by_reseed"]


def dropped_by_reseed(
    workers: Iterable[WorkerInfo], epoch: str | None, revision: int, keys: Collection[str]
) -> dict[str, list[str]]:
    """The flags `workers` still serve from before a wipe that a namespace holding only
    `keys` would lack, each with the ids of the workers serving it (empty: none).

    The store is at (`epoch`, `revision`). A worker's report counts while the store shows
    no newer state than the worker's: no epoch at all (wiped), or the worker's own epoch
    at a revision not past its own (the flags hash deleted behind the protocol). Once a
    re-seed was written, what a worker held is being replaced anyway."""
    dropped: dict[str, list[str]] = {}
    for worker in workers:
        if not worker.held:
            continue
        if epoch is not None and (worker.epoch != epoch or revision > worker.revision):
            continue
        for key in worker.held:
            if key not in keys:
                dropped.setdefault(key, []).append(worker.id)
    return dropped
