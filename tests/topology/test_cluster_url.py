"""The `redis+cluster://` URL rule and the script/subscribe choices that hang on it (pure
parsing, no server): what is accepted, what is refused naming the fault, redaction, and
that the standalone write script is left exactly as it was."""

from __future__ import annotations

import pytest

from flagsync._cluster import (
    ClusterTarget,
    ClusterURLError,
    SlotMovedError,
    is_replica_node_url,
    node_from_shards,
    parse_cluster_url,
    strip_replica_mark,
    subscribe_method,
    write_script_for,
)
from flagsync._connection import check_url, redact_url
from flagsync._write_script import SHARDED_WRITE_SCRIPT, WRITE_SCRIPT
from flagsync.errors import StoreUnavailableError, StoreURLError
from flagsync.publisher import Publisher
from flagsync.server import free_port


class TestClusterURL:
    """Parsing `redis+cluster://[user:pass@]host:port[,host:port...][?read_from=...]`."""

    def test_seeds_credentials_and_read_from_are_read(self) -> None:
        """Every seed (IPv6 too), the data nodes' credentials and `read_from` come out."""
        url = "redis+cluster://worker:s%40cret@10.0.0.1:7000,[::1]:7001?read_from=replica"
        assert parse_cluster_url(url, "shown") == ClusterTarget(
            seeds=(("10.0.0.1", 7000), ("::1", 7001)),
            username="worker",
            password="s@cret",  # noqa: S106 - a test URL's own
            read_from="replica",
        )

    def test_a_plain_url_follows_the_primary(self) -> None:
        """Without options a worker follows the slot's owner; a trailing slash is no path."""
        target = parse_cluster_url("redis+cluster://127.0.0.1:7000/", "shown")
        assert target == ClusterTarget(seeds=(("127.0.0.1", 7000),))

    @pytest.mark.parametrize(
        ("url", "fact"),
        [
            ("redis+cluster://", "names no seed node"),
            ("redis+cluster://u:p@", "names no seed node"),
            ("redis+cluster://127.0.0.1:7000/0", "has no path"),
            ("redis+cluster://127.0.0.1:port", "'127.0.0.1:port' is not HOST:PORT"),
            ("redis+cluster://127.0.0.1:7000,127.0.0.1:0", "port in 1..65535"),
            ("redis+cluster://127.0.0.1:7000?db=2", "unknown option(s) db"),
            ("rediss+cluster://127.0.0.1:7000", "TLS to a cluster"),
            ("redis+cluster://127.0.0.1:7000?read_from=any", "read_from='any'"),
        ],
    )
    def test_a_bad_url_is_refused_naming_the_fault(self, url: str, fact: str) -> None:
        """`check_url` (which every entry point calls) refuses it with a `StoreURLError`."""
        with pytest.raises(StoreURLError) as caught:
            check_url(url)
        assert isinstance(caught.value, ClusterURLError)
        assert fact in str(caught.value)

    def test_passwords_are_redacted_in_messages(self) -> None:
        """The data nodes' password is shown as *** (in a refusal too)."""
        url = "redis+cluster://u:topsecret@127.0.0.1:7000?read_from=all"
        with pytest.raises(ClusterURLError) as caught:
            check_url(url)
        for text in (redact_url(url), str(caught.value)):
            assert "topsecret" not in text

    def test_a_replica_node_url_keeps_credentials_and_is_marked_for_readonly(self) -> None:
        """The node URL a `read_from=replica` worker follows keeps user and password,
        quoted, and carries the mark that makes `connect` send READONLY; a primary's not."""
        target = parse_cluster_url("redis+cluster://w:p%40ss@127.0.0.1:1", "shown")
        replica = target.node_url("127.0.0.1", 7003, replica=True)
        assert is_replica_node_url(replica)
        assert strip_replica_mark(replica) == "redis://w:p%40ss@127.0.0.1:7003"
        assert not is_replica_node_url(target.node_url("127.0.0.1", 7000))


class TestClusterChoices:
    """What a cluster URL changes for writers and workers, and what it leaves alone."""

    def test_the_cluster_script_differs_only_in_its_publish_command(self) -> None:
        """SPUBLISH replaces the one PUBLISH; every other byte is the standalone script's,
        which non-cluster URLs keep."""
        assert SHARDED_WRITE_SCRIPT.count("'SPUBLISH'") == 1
        assert "'PUBLISH'" not in SHARDED_WRITE_SCRIPT
        assert SHARDED_WRITE_SCRIPT.replace("'SPUBLISH'", "'PUBLISH'") == WRITE_SCRIPT
        assert write_script_for("redis+cluster://127.0.0.1:7000") is SHARDED_WRITE_SCRIPT
        for url in ("redis://127.0.0.1:6379", "redis+sentinel://127.0.0.1:26379/s"):
            assert write_script_for(url) is WRITE_SCRIPT

    def test_workers_shard_subscribe_on_a_cluster_only(self) -> None:
        """SSUBSCRIBE on a cluster URL, the classic SUBSCRIBE everywhere else."""
        assert subscribe_method("redis+cluster://127.0.0.1:7000") == "ssubscribe"
        assert subscribe_method("redis://127.0.0.1:6379") == "subscribe"
        assert subscribe_method("redis+sentinel://127.0.0.1:26379/s") == "subscribe"


def shard(first: int, last: int, *nodes: tuple[int, str, str]) -> list[object]:
    """One CLUSTER SHARDS entry as RESP2 gives it: flat name/value lists, bytes names."""
    entries = [
        [b"id", b"x", b"port", port, b"ip", b"127.0.0.1", b"role", role.encode(),
         b"health", health.encode()]
        for port, role, health in nodes
    ]  # fmt: skip
    return [b"slots", [first, last], b"nodes", entries]


REPLY = [
    shard(0, 8191, (7000, "master", "online"), (7003, "replica", "online")),
    shard(8192, 16383, (7001, "master", "fail"), (7004, "replica", "online")),
]


class TestSlotNode:
    """Which node a worker follows, from one CLUSTER SHARDS reply."""

    def test_the_owner_by_default_and_its_online_replica_with_read_from_replica(self) -> None:
        """Slot 100 lives in the first shard: its master, or its replica (marked for
        READONLY) when the URL asks for replicas."""
        primary = ClusterTarget(seeds=(("127.0.0.1", 1),))
        replica = ClusterTarget(seeds=(("127.0.0.1", 1),), read_from="replica")
        assert node_from_shards(primary, REPLY, 100) == "redis://127.0.0.1:7000"
        assert node_from_shards(replica, REPLY, 100) == "redis://127.0.0.1:7003#cluster-replica"

    def test_a_replica_not_online_means_following_the_owner(self) -> None:
        """A replica the cluster lists as loading (Redis 7.0: no offset yet) is skipped."""
        reply = [shard(0, 16383, (7000, "master", "online"), (7003, "replica", "loading"))]
        target = ClusterTarget(seeds=(("127.0.0.1", 1),), read_from="replica")
        assert node_from_shards(target, reply, 5) == "redis://127.0.0.1:7000"

    def test_a_failed_owner_or_an_uncovered_slot_is_a_reason_to_ask_again(self) -> None:
        """A shard whose master is failed (its replica not promoted yet), or a slot no
        shard serves, raises `SlotMovedError`: the driver backs off and asks again."""
        target = ClusterTarget(seeds=(("127.0.0.1", 1),), read_from="replica")
        with pytest.raises(SlotMovedError, match="no reachable owner"):
            node_from_shards(target, REPLY, 9000)
        with pytest.raises(SlotMovedError, match="no shard serves slot 5"):
            node_from_shards(target, REPLY[1:], 5)


class TestUnreachableCluster:
    """No seed answering is an unavailable store, said with the URL redacted."""

    def test_a_publisher_on_dead_seeds_raises_store_unavailable(self) -> None:
        """`Publisher` on a cluster URL whose only seed refuses connections raises
        `StoreUnavailableError` naming the URL (password hidden), not redis-py's own
        `RedisClusterException`."""
        url = f"redis+cluster://u:topsecret@127.0.0.1:{free_port()}"
        with pytest.raises(StoreUnavailableError) as caught:
            Publisher(url, "ns", "operator")
        assert "cannot reach redis+cluster://u:***@127.0.0.1" in str(caught.value)
        assert "topsecret" not in str(caught.value)
