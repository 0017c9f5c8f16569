"""The `redis+sentinel://` URL rule (pure parsing, no server): what is accepted, what is
refused and how the refusal names the fault, and that passwords never show."""

from __future__ import annotations

import pytest

from flagsync._connection import check_url, redact_url
from flagsync._topology import SentinelTarget, SentinelURLError, parse_sentinel_url
from flagsync.errors import StoreURLError


class TestSentinelURL:
    """Parsing `redis+sentinel://[user:pass@]host:port[,host:port...]/service[?options]`."""

    def test_hosts_service_and_credentials_are_read(self) -> None:
        """Every sentinel, the service and both sets of credentials come out of the URL."""
        url = (
            "redis+sentinel://worker:s%40cret@10.0.0.1:26379,[::1]:26380/flags"
            "?sentinel_username=watcher&sentinel_password=pw&read_from=replica"
        )
        assert parse_sentinel_url(url, "shown") == SentinelTarget(
            sentinels=(("10.0.0.1", 26379), ("::1", 26380)),
            service="flags",
            username="worker",
            password="s@cret",  # noqa: S106 - a test URL's own
            sentinel_username="watcher",
            sentinel_password="pw",  # noqa: S106 - a test URL's own
            read_from="replica",
        )

    @pytest.mark.parametrize(
        ("url", "fact"),
        [
            ("redis+sentinel:///flags", "names no sentinel"),
            ("redis+sentinel://127.0.0.1:26379", "service name"),
            ("redis+sentinel://127.0.0.1:26379/a/b", "service name"),
            ("redis+sentinel://127.0.0.1:port/flags", "'127.0.0.1:port' is not HOST:PORT"),
            ("redis+sentinel://127.0.0.1:0/flags", "port in 1..65535"),
            ("redis+sentinel://127.0.0.1:26379/flags?db=2", "unknown option(s) db"),
            ("redis+sentinel://127.0.0.1:1/flags?ssl_ca_certs=/ca.pem", "need TLS: write rediss+"),
            ("rediss+sentinel://127.0.0.1:1/flags?ssl_cert_reqs=maybe", "ssl_cert_reqs='maybe'"),
            ("rediss+sentinel://127.0.0.1:1/flags?ssl_check_hostname=sure", "true or false"),
            ("rediss+sentinel://127.0.0.1:1/flags?ssl_ca_certs=", "ssl_ca_certs is empty"),
            (
                "rediss+sentinel://127.0.0.1:1/flags?ssl_ca_cert=/ca.pem",
                "unknown option(s) ssl_ca_cert",
            ),
            ("redis+tls+sentinel://127.0.0.1:1/flags", "is not supported"),
            ("redis+sentinel://127.0.0.1:26379/flags?read_from=any", "read_from='any'"),
        ],
    )
    def test_a_bad_url_is_refused_naming_the_fault(self, url: str, fact: str) -> None:
        """`check_url` (which every entry point calls) refuses it with a `StoreURLError`."""
        with pytest.raises(StoreURLError) as caught:
            check_url(url)
        assert isinstance(caught.value, SentinelURLError)
        assert fact in str(caught.value)

    def test_tls_options_reach_sentinels_data_nodes_and_replica_urls(self) -> None:
        """`rediss+sentinel://` turns TLS on for both kinds of connection, with its
        `ssl_*` options; a replica's URL is `rediss://` with the same options."""
        url = (
            "rediss+sentinel://w:pw@127.0.0.1:1/flags?ssl_ca_certs=/tls/ca.pem"
            "&ssl_check_hostname=false&read_from=replica"
        )
        target = parse_sentinel_url(url, "shown")
        assert target.tls_options() == {
            "ssl": True,
            "ssl_ca_certs": "/tls/ca.pem",
            "ssl_check_hostname": False,
        }
        assert target.node_url("127.0.0.1", 6380) == (
            "rediss://w:pw@127.0.0.1:6380?ssl_ca_certs=%2Ftls%2Fca.pem&ssl_check_hostname=false"
        )
        plain = parse_sentinel_url("redis+sentinel://127.0.0.1:1/flags", "shown")
        assert plain.tls_options() == {}
        assert plain.node_url("127.0.0.1", 6380) == "redis://127.0.0.1:6380"

    def test_a_replica_url_carries_the_data_nodes_credentials(self) -> None:
        """The plain URL a `read_from=replica` worker follows keeps user and password,
        quoted, so redis-py reads them back unchanged."""
        target = parse_sentinel_url("redis+sentinel://w:p%40ss@127.0.0.1:1/flags", "shown")
        assert target.node_url("127.0.0.1", 6380) == "redis://w:p%40ss@127.0.0.1:6380"

    def test_passwords_are_redacted_in_messages(self) -> None:
        """Both the data nodes' password and `sentinel_password` are shown as *** (in a
        refusal of a URL that names no service, too)."""
        url = (
            "rediss+sentinel://u:topsecret@127.0.0.1:1/?sentinel_password=alsosecret"
            "&ssl_password=keysecret"
        )
        with pytest.raises(SentinelURLError) as caught:
            check_url(url)
        for text in (redact_url(url), str(caught.value)):
            assert "topsecret" not in text
            assert "alsosecret" not in text
            assert "keysecret" not in text
