"""Least-privilege ACL users on a test server, created from `flagsync acl`'s own lines.

The users are made with exactly the `ACL SETUSER` commands `flagsync acl` prints
(`flagsync.acl.acl_setuser_commands`), so a test passing here proves the documented
rules are accepted by the server and are enough (or too little) for each role.
"""

from __future__ import annotations

import secrets
import shlex
from dataclasses import dataclass
from typing import Any

import redis

from flagsync.acl import acl_setuser_commands


@dataclass(frozen=True)
class AclUsers:
    """A worker and an operator user of one namespace on one server."""

    port: int
    worker: str
    worker_password: str
    operator: str
    operator_password: str

    @property
    def worker_url(self) -> str:
        """The URL a worker (`FlagClient`) connects with."""
        return f"redis://{self.worker}:{self.worker_password}@127.0.0.1:{self.port}"

    @property
    def operator_url(self) -> str:
        """The URL an operator (`Publisher`, the CLI) connects with."""
        return f"redis://{self.operator}:{self.operator_password}@127.0.0.1:{self.port}"


def create_acl_users(admin: redis.Redis, port: int, namespace: str, *, tag: str = "") -> AclUsers:
    """Create the namespace's worker and operator users with fresh random passwords.

    `tag` makes the user names unique on a server shared by several tests.
    """
    users = AclUsers(
        port=port,
        worker=f"flagsync-worker{tag}",
        worker_password=f"w-{secrets.token_hex(12)}",
        operator=f"flagsync-operator{tag}",
        operator_password=f"o-{secrets.token_hex(12)}",
    )
    for line in acl_setuser_commands(
        namespace,
        worker_user=users.worker,
        operator_user=users.operator,
        worker_password=users.worker_password,
        operator_password=users.operator_password,
    ):
        admin.execute_command(*shlex.split(line))  # type: ignore[no-untyped-call]
    return users


def delete_acl_users(admin: redis.Redis, users: AclUsers) -> None:
    """Remove both users (on a shared server, after the test)."""
    admin.execute_command("ACL", "DELUSER", users.worker, users.operator)  # type: ignore[no-untyped-call]


def acl_log(admin: redis.Redis) -> list[list[Any]]:
    """The server's ACL LOG (newest first), each entry a flat list of field names and values."""
    entries: list[list[Any]] = admin.execute_command("ACL", "LOG", "128")  # type: ignore[no-untyped-call]
    return entries


def auth_failures(admin: redis.Redis, user: str) -> int:
    """How many AUTH attempts as `user` the server refused since the last `ACL LOG RESET`.

    Refusals of the same kind are merged into one ACL LOG entry with a count.
    """
    total = 0
    for entry in acl_log(admin):
        fields = dict(zip(entry[::2], entry[1::2], strict=True))
        if fields[b"reason"] == b"auth" and fields[b"username"] == user.encode():
            total += int(fields[b"count"])
    return total


def denied_commands(admin: redis.Redis, user: str) -> list[str]:
    """The commands, keys and channels refused to `user` (ACL LOG, newest first)."""
    denied = []
    for entry in acl_log(admin):
        fields = dict(zip(entry[::2], entry[1::2], strict=True))
        if fields[b"reason"] != b"auth" and fields[b"username"] == user.encode():
            denied.append(f"{fields[b'reason'].decode()}:{fields[b'object'].decode()}")
    return denied
