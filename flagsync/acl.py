"""Least-privilege Redis ACL users for a namespace: workers read, operators write.

Redis's default user is `nopass ~* &* +@all`: anyone who can connect can publish a
flag change. In production, disable it and give each side only what it uses:

- **worker, one user per worker** (`flagsync acl --worker-id ID`, for a client connected
  with `worker_id=ID`): read the namespace's keys, subscribe to its change channel, and
  write only its own presence key (`{fs:<ns>}:worker:<ID>`) and its own metrics streams
  (`{fs:<ns>}:metrics:<flag>:<ID>`), plus what every worker shares: the beacon lease
  (`{fs:<ns>}:beacon`), the ack stream (`{fs:<ns>}:acks`) and publishing on the
  heartbeat channel. It cannot change a flag or publish on the change channel, and
  cannot touch another worker's presence or metrics.
- **worker, shared** (no `--worker-id`): the same reads, but writes to every presence
  key and every metrics stream of the namespace. Simpler to run (one credential for a
  fleet of forking processes whose ids are random), weaker: one compromised worker can
  delete or fake other workers' presence records and overwrite or delete their metrics.
  `wait_propagated` and the rollout controller treat such data as unconfirmed or
  untrustworthy, never as success (see the README's security section).
- **operator** (`Publisher`, the CLI, the rollout controller): read and write the
  namespace's keys, run the write script, publish on the change channel, and confirm
  replication (`WAIT`, and `INFO` for the replica count). No other dangerous commands
  (FLUSHALL, CONFIG, ...).

`flagsync acl` prints these lines; `acl_rules()` returns them for provisioning code.
Selectors (`%R~`, `%W~`, and the worker's `"(+publish ...)"`) need Redis >= 7 or Valkey.
The worker rule holds one quoted argument (the selector that lets it publish beacon
heartbeats on `{fs:<ns>}:heartbeat` and on no other channel): split the lines as a shell
does (`shlex.split`), as redis-cli does when they are pasted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from flagsync.errors import FlagsyncError
from flagsync.store import StoreKeys

__all__ = ["WORKER_ID_PATTERN", "acl_rules", "acl_setuser_commands", "check_worker_id"]

# flagsync's connections send no CLIENT SETINFO (Redis 7.0 has no such command, and an
# ACL denial of it would only fill the ACL log), so it needs no grant.
_CONNECTION = "+ping +hello +auth +client|setname +client|id"
_WORKER_COMMANDS = (
    "+subscribe +unsubscribe +ssubscribe +sunsubscribe "
    "+get +mget +hget +hgetall +hlen +xrange +set +del +xadd +pexpire +role"
)
# On a Redis Cluster (`redis+cluster://`): shard pub/sub, READONLY on a replica, and the
# topology reads of a worker finding its slot's node (CLUSTER SHARDS) and of redis-py's
# `RedisCluster` (CLUSTER SLOTS, COMMAND). Harmless without a cluster.
_CLUSTER = "+readonly +cluster|shards +cluster|slots +command"
WORKER_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
"""Worker ids a per-worker ACL accepts: no `:` (key separator) and no glob character."""


def acl_rules(namespace: str = "default", worker_id: str | None = None) -> dict[str, str]:
    """The ACL rule strings (without user name and password) for `worker` and `operator`;
    with `worker_id`, the worker's writes are confined to that worker's own keys."""
    keys = StoreKeys(namespace)
    if worker_id is None:
        writes = f"%W~{keys.worker_pattern} %W~{keys.metrics_pattern}"
    else:
        check_worker_id(worker_id)
        writes = f"%W~{keys.worker(worker_id)} %W~{keys.metrics_pattern}:{worker_id}"
    # The beacon (flagsync._sync.beacon): every worker may take its lease, append its
    # acks, and publish on the heartbeat channel only: a selector grants PUBLISH there,
    # so the change channel stays subscribe-only (a worker cannot forge a change).
    beacon = f"%W~{keys.beacon} %W~{keys.acks} &{keys.heartbeat}"
    worker = (
        f"resetkeys resetchannels -@all {_CONNECTION} {_CLUSTER} {_WORKER_COMMANDS} "
        f"%R~{keys.pattern} {writes} {beacon} &{keys.channel} "
        f'"(+publish +spublish resetchannels &{keys.heartbeat})"'
    )
    operator = (
        f"resetkeys resetchannels -@all {_CONNECTION} {_CLUSTER} "
        "+@read +@write -@dangerous +eval +evalsha +script|load +script|exists "
        "+publish +spublish +subscribe +unsubscribe +multi +exec +discard +time +scan +wait +info "
        f"~{keys.pattern} &{keys.channel}"
    )
    return {"worker": worker, "operator": operator}


def check_worker_id(worker_id: str) -> None:
    """Refuse a worker id a per-worker ACL pattern cannot confine (`:` or glob chars)."""
    if not isinstance(worker_id, str) or not WORKER_ID_PATTERN.match(worker_id):
        raise FlagsyncError(
            f"invalid worker id {worker_id!r} for a per-worker ACL: use 1-100 of "
            "A-Z a-z 0-9 . _ - starting with a letter or digit"
        )


def acl_setuser_commands(
    namespace: str = "default",
    *,
    worker_user: str = "flagsync-worker",
    operator_user: str = "flagsync-operator",
    worker_password: str = "<worker-password>",  # noqa: S107 - a placeholder to replace
    operator_password: str = "<operator-password>",  # noqa: S107 - a placeholder
    worker_ids: Sequence[str] = (),
) -> list[str]:
    """`ACL SETUSER` lines ready for redis-cli (replace the placeholder passwords).

    With `worker_ids`, one worker user per id (`<worker_user>-<id>`, each confined to its
    own keys) instead of the shared worker user.
    """
    rules = acl_rules(namespace)
    if worker_ids:
        workers = [
            f"ACL SETUSER {worker_user}-{worker_id} on >{worker_password} "
            f"{acl_rules(namespace, worker_id)['worker']}"
            for worker_id in worker_ids
        ]
    else:
        workers = [f"ACL SETUSER {worker_user} on >{worker_password} {rules['worker']}"]
    return [
        *workers,
        f"ACL SETUSER {operator_user} on >{operator_password} {rules['operator']}",
    ]
