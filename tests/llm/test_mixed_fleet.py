"""Mixed fleets: a worker that does not know a flag's `kind` (a kind from a newer
flagsync, written around this publisher's validation through the real write script)
quarantines that flag alone and serves every other flag."""

from __future__ import annotations

import copy
from typing import Any

from flagsync._signed_write import run_write_script
from flagsync.evaluation import ErrorCode
from flagsync.publisher import Publisher
from flagsync.store import WRITE_SCRIPT, ScriptWrite, WriteApplied
from tests.integration.conftest import ClientFactory
from tests.integration.support import wait_until
from tests.llm.support import FLAGS_FILE, PRIMARY

FREE = {"key": "user-1", "plan": "free"}


def write_unchecked(publisher: Publisher, key: str, definition: dict[str, Any]) -> int:
    """Write one flag with the real write script (CAS, digest, log, PUBLISH) and no
    validation, as a newer publisher would; returns the revision."""
    current = publisher.client.hget(publisher.keys.versions, f"flag:{key}")
    write = ScriptWrite("flag", key, int(current or 0), "put", definition)
    result = run_write_script(
        publisher.client.register_script(WRITE_SCRIPT),
        publisher.client,
        publisher.keys,
        [write],
        signer=None,
        seen_revision=publisher.revision()[1],
        log_maxlen=100,
        actor="newer-publisher",
        reason="a kind this worker does not know",
    )
    assert isinstance(result, WriteApplied)
    return result.revision


def future_flag() -> dict[str, Any]:
    """A flag of a kind no flagsync knows today (what a newer release might add)."""
    return {
        "kind": "agent",
        "variants": {"main": {"graph": "planner", "tools": ["search"]}},
        "off": "main",
        "default": "main",
    }


class TestUnknownKind:
    """An unknown `kind` costs a worker that flag only, on running and fresh workers."""

    def test_running_worker_quarantines_only_that_flag(
        self, publisher: Publisher, make_client: ClientFactory
    ) -> None:
        """Applied as a change to a running worker: the flag is set aside with why,
        `chat-llm` and `other-flag` keep serving, status and `detail` say so."""
        publisher.apply(FLAGS_FILE)
        worker = make_client(publisher.url)
        assert worker.wait_ready(5.0)
        revision = write_unchecked(publisher, "next-agent", future_flag())
        assert wait_until(lambda: worker.revision == revision, 5.0)
        status = worker.status()
        assert "next-agent" in status.quarantined
        assert "flags.next-agent.kind: unknown kind 'agent'" in status.quarantined["next-agent"]
        assert worker.detail("next-agent", FREE, {}).error_code is ErrorCode.PARSE_ERROR
        config = worker.llm_config("chat-llm", FREE, None)
        assert config is not None
        assert config.model == "gpt-4o"
        assert worker.number_value("other-flag", FREE, 0) == 1

    def test_fresh_worker_loads_the_rest(
        self, publisher: Publisher, make_client: ClientFactory
    ) -> None:
        """A worker started after the write (a whole load) serves the same flags."""
        publisher.apply(FLAGS_FILE)
        write_unchecked(publisher, "next-agent", future_flag())
        worker = make_client(publisher.url)
        assert worker.wait_ready(5.0)
        assert set(worker.status().quarantined) == {"next-agent"}
        assert sorted(worker.keys()) == ["chat-llm", "other-flag"]

    def test_rewritten_flag_keeps_its_last_known_good(
        self, publisher: Publisher, make_client: ClientFactory
    ) -> None:
        """An llm flag rewritten with an unknown kind keeps serving the config (and
        version) the worker had; other flags follow later changes."""
        publisher.apply(FLAGS_FILE)
        worker = make_client(publisher.url)
        assert worker.wait_ready(5.0)
        before = worker.llm_config("chat-llm", FREE, None)
        assert before is not None
        rewritten = {
            "kind": "llm-v2",
            "variants": {"main": copy.deepcopy(PRIMARY)},
            "off": "main",
            "default": "main",
        }
        revision = write_unchecked(publisher, "chat-llm", rewritten)
        assert wait_until(lambda: worker.revision == revision, 5.0)
        assert (
            worker.status().quarantined["chat-llm"].endswith("serving the last-known-good version")
        )
        kept = worker.llm_config("chat-llm", FREE, None)
        assert kept is not None
        assert (kept.model, kept.version) == (before.model, before.version)
        revision = publisher.put(
            "other-flag", {"variants": {"a": 1, "b": 2}, "off": "a", "default": "b"}
        )
        assert wait_until(lambda: worker.revision == revision, 5.0)
        assert worker.number_value("other-flag", FREE, 0) == 2
