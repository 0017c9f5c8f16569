"""Least-privilege Redis ACL users for a namespace: workers read, operators write.

Redis's default user is `nopass ~* &* +@all`: anyone who can connect can publish a
flag change. In production, disable it and give each side only what it uses:

- **worker** (`FlagClient.connect`): read the namespace's keys, subscribe to its change
  channel, and write only presence keys (`{fs:<ns>}:worker:*`) and metrics streams
  (`{fs:<ns>}:metrics:*`). It cannot change a flag
  or publish: a compromised worker cannot steer the fleet.
- **operator** (`Publisher`, the CLI): read and write the namespace's keys, run the write
  script, publish on the change channel. No dangerous commands (FLUSHALL, CONFIG, ...).

`flagsync acl` prints these lines; `acl_rules()` returns them for provisioning code.
Selectors (`%R~`, `%W~`) need Redis >= 7 or Valkey.
"""

from __future__ import annotations

from flagsync.store import StoreKeys

__all__ = ["acl_rules", "acl_setuser_commands"]

# flagsync's connections send no CLIENT SETINFO (Redis 7.0 has no such command, and an
# ACL denial of it would only fill the ACL log), so it needs no grant.
_CONNECTION = "+ping +hello +auth +client|setname +client|id"


def acl_rules(namespace: str = "default") -> dict[str, str]:
    """The ACL rule strings (without user name and password) for `worker` and `operator`."""
    keys = StoreKeys(namespace)
    worker = (
        f"resetkeys resetchannels -@all {_CONNECTION} "
        "+subscribe +unsubscribe +get +mget +hget +hgetall +hlen +xrange +set +del +xadd "
        f"%R~{keys.pattern} %W~{keys.worker_pattern} %W~{keys.metrics_pattern} &{keys.channel}"
    )
    operator = (
        f"resetkeys resetchannels -@all {_CONNECTION} "
        "+@read +@write -@dangerous +eval +evalsha +script|load +script|exists "
        "+publish +subscribe +unsubscribe +multi +exec +discard +time +scan "
        f"~{keys.pattern} &{keys.channel}"
    )
    return {"worker": worker, "operator": operator}


def acl_setuser_commands(
    namespace: str = "default",
    *,
    worker_user: str = "flagsync-worker",
    operator_user: str = "flagsync-operator",
    worker_password: str = "<worker-password>",  # noqa: S107 - a placeholder to replace
    operator_password: str = "<operator-password>",  # noqa: S107 - a placeholder
) -> list[str]:
    """`ACL SETUSER` lines ready for redis-cli (replace the placeholder passwords)."""
    rules = acl_rules(namespace)
    return [
        f"ACL SETUSER {worker_user} on >{worker_password} {rules['worker']}",
        f"ACL SETUSER {operator_user} on >{operator_password} {rules['operator']}",
    ]
