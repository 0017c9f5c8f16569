"""llm flags through a real server: refused before anything is written (CLI and Publisher
alike), the `llm:` allow-list stored with the namespace and enforced on `put`, configs
served by connected workers and their telemetry flushed to the metrics stream."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import redis

from flagsync import ConflictError, InvalidFlagError, load_flags
from flagsync._bulk_load import flag_problem
from flagsync._metrics_window import read_window
from flagsync._signed_write import run_write_script
from flagsync.llm.policy import encode_settings, fetch_settings
from flagsync.llm.tracker import parse_call_id
from flagsync.model import Flag, LLMSettings
from flagsync.publisher import Publisher
from flagsync.store import WRITE_SCRIPT, ScriptWrite, StoreKeys, WriteConflict
from tests.integration.conftest import ClientFactory, PublisherFactory
from tests.integration.support import wait_until
from tests.llm.support import FLAGS_FILE, PRIMARY
from tests.rollout.support import reporter_of, run_cli

FREE = {"key": "user-1", "plan": "free"}


def chat_flag(**changes: Any) -> dict[str, Any]:
    """A one-variant llm flag on the primary config with fields replaced."""
    config = copy.deepcopy(PRIMARY) | changes
    return {"kind": "llm", "variants": {"main": config}, "off": "main", "default": "main"}


class TestRefusedBeforeWriting:
    """Bad llm configs change nothing, whoever writes them."""

    def test_publisher_apply_refuses(self, publisher: Publisher) -> None:
        """A file with an anthropic temperature is refused with its path; revision stays 0."""
        bad = {"flags": {"chat": chat_flag(provider="anthropic", model="claude-sonnet-4")}}
        with pytest.raises(InvalidFlagError) as caught:
            publisher.apply(bad)
        assert "flags.chat.variants.main.params.temperature" in str(caught.value)
        assert publisher.revision()[1] == 0

    def test_cli_apply_refuses(self, publisher: Publisher, tmp_path: Path) -> None:
        """`flagsync apply` prints each problem with its path and exits 2, writing nothing."""
        bad = tmp_path / "bad.yaml"
        bad.write_text(
            "flags:\n  chat:\n    kind: llm\n    variants:\n"
            "      main: {provider: openai, model: gpt-4o, params: {top_p: 0},"
            " messages: [{role: bot, content: hi}]}\n"
            "    off: main\n    default: main\n",
            encoding="utf-8",
        )
        done = run_cli(publisher.url, publisher.keys.namespace, "apply", "-f", str(bad))
        assert done.returncode == 2
        assert "flags.chat.variants.main.params.top_p: 0 is outside (0, 1]" in done.stderr
        assert "flags.chat.variants.main.messages[0].role" in done.stderr
        assert publisher.revision()[1] == 0


class TestModelsAllowList:
    """The `llm:` section of an applied file is stored and checks later writes."""

    def test_put_checks_the_stored_list(self, publisher: Publisher, raw: redis.Redis) -> None:
        """After applying a file with `llm.models`, `put` of a model not listed is refused."""
        publisher.apply(FLAGS_FILE)
        assert raw.exists(StoreKeys(publisher.keys.namespace).llm)
        revision = publisher.revision()[1]
        with pytest.raises(InvalidFlagError) as caught:
            publisher.put("chat", chat_flag(model="gpt-3.5-turbo"))
        assert caught.value.issues[0].path == "flags.chat.variants.main.model"
        assert publisher.revision()[1] == revision
        publisher.put("chat", chat_flag(model="gpt-4.1"))
        assert publisher.revision()[1] == revision + 1

    def test_workers_fetch_the_stored_prices(self, publisher: Publisher) -> None:
        """`fetch_settings` reads the applied section back (a worker's price table)."""
        assert fetch_settings(publisher.url, publisher.keys.namespace) is None
        publisher.apply(FLAGS_FILE)
        settings = fetch_settings(publisher.url, publisher.keys.namespace)
        assert settings == load_flags(FLAGS_FILE).llm

    def test_apply_without_section_checks_the_stored_list(self, publisher: Publisher) -> None:
        """A later file without `llm:` is still checked against the stored allow-list."""
        publisher.apply(FLAGS_FILE)
        with pytest.raises(InvalidFlagError):
            publisher.apply({"flags": {"chat": chat_flag(model="o1")}})


class TestSectionWrittenAtomically:
    """The `llm:` section and the flags checked against it are one write-script run."""

    def test_refused_write_stores_no_section(self, publisher: Publisher, raw: redis.Redis) -> None:
        """A write the script refuses (a stale flag version) stores neither the flag nor
        the section that came with it."""
        keys = publisher.keys
        blob = encode_settings(LLMSettings(models={"openai": ["gpt-4o"]}))
        write = ScriptWrite("flag", "chat", 5, "apply", chat_flag())  # the store is at v0
        result = run_write_script(
            publisher.client.register_script(WRITE_SCRIPT),
            publisher.client,
            keys,
            [write],
            signer=None,
            seen_revision=0,
            log_maxlen=100,
            actor="test",
            reason="",
            llm_section=blob,
        )
        assert isinstance(result, WriteConflict)
        assert raw.get(keys.llm) is None
        assert raw.hget(keys.flags, "chat") is None

    def test_a_changed_section_alone_is_a_revision(self, publisher: Publisher) -> None:
        """Re-applying the same flags with another allow-list writes it (one revision)."""
        publisher.apply(FLAGS_FILE)
        revision = publisher.revision()[1]
        doc = load_flags(FLAGS_FILE).to_builtins()
        assert publisher.apply(doc) == revision  # the same section: nothing to write
        doc["llm"]["models"]["openai"].append("gpt-4.1-mini")
        assert publisher.apply(doc) == revision + 1
        settings = fetch_settings(publisher.url, publisher.keys.namespace)
        assert settings is not None
        assert "gpt-4.1-mini" in settings.models["openai"]

    def test_new_section_checks_flags_already_stored(self, publisher: Publisher) -> None:
        """A section that no longer allows a stored flag's model is refused, nothing written."""
        publisher.apply(FLAGS_FILE)
        revision = publisher.revision()[1]
        narrower = {"flags": {}, "llm": {"models": {"openai": ["gpt-4o"]}}}
        with pytest.raises(InvalidFlagError) as caught:
            publisher.apply(narrower)
        assert "flags.chat-llm.variants.candidate.model" in str(caught.value)
        assert publisher.revision()[1] == revision

    def test_put_raced_by_a_new_section_is_refused(
        self, publisher: Publisher, make_publisher: PublisherFactory
    ) -> None:
        """A `put` checked against one allow-list is refused when another publisher
        narrows the list between that check and the write: the two cannot diverge."""
        publisher.apply(FLAGS_FILE)
        other = make_publisher(publisher.url)
        narrower = load_flags(FLAGS_FILE).to_builtins()
        del narrower["flags"]["chat-llm"]["variants"]["candidate"]
        narrower["flags"]["chat-llm"]["rules"] = []
        narrower["llm"]["models"]["openai"] = ["gpt-4o"]

        class Raced(Publisher):
            def _llm_writes(self, flags: Any, section: Any) -> Any:
                checked = super()._llm_writes(flags, section)
                other.apply(narrower)  # lands between the check and the write
                return checked

        racing = Raced(publisher.url, publisher.keys.namespace)
        try:
            revision = publisher.revision()[1]
            with pytest.raises(ConflictError) as caught:
                racing.put("chat", chat_flag(model="gpt-4.1"))
            assert (caught.value.kind, caught.value.key) == ("llm", "settings")
            assert publisher.get("chat") is None
            assert publisher.revision()[1] == revision + 1  # the other apply only
        finally:
            racing.close()


class TestServedByWorkers:
    """A connected worker serves llm configs and reports their telemetry."""

    def test_config_and_telemetry_reach_the_stream(
        self, publisher: Publisher, make_client: ClientFactory, raw: redis.Redis
    ) -> None:
        """A worker serves the config; its call and a second worker's feedback by id are flushed."""
        publisher.apply(FLAGS_FILE)
        url = publisher.url
        worker = make_client(url, exposures=True, metrics_interval_s=60)
        rater = make_client(url, metrics_interval_s=60)
        assert worker.wait_ready(5.0)
        assert rater.wait_ready(5.0)
        config = worker.llm_config("chat-llm", FREE, None, {"product": "Acme"})
        assert config is not None
        assert config.model == "gpt-4o"
        with worker.llm_call(config) as call:  # priced from the stored `llm.prices`
            call.usage(1000, 100)
        assert call.id is not None
        assert rater.llm_feedback(call.id, "thumbs_down", 1.0)
        assert reporter_of(worker).flush()
        assert reporter_of(rater).flush()

        def flushed() -> bool:  # each worker flushes to its own stream: read them all
            window = read_window(raw, url, publisher.keys, "chat-llm", 0).stats
            return ("current", "thumbs_down") in window and ("current", "cost") in window

        assert wait_until(flushed, 5.0)

    def test_worker_costs_calls_from_the_stored_prices(
        self, publisher: Publisher, make_client: ClientFactory
    ) -> None:
        """Without `prices=`, a connected worker's `llm_call` prices tokens with the applied
        file's `llm.prices` (read from the store), and re-reads them after a new revision."""
        publisher.apply(FLAGS_FILE)
        worker = make_client(publisher.url, metrics_interval_s=60)
        assert worker.wait_ready(5.0)
        config = worker.llm_config("chat-llm", FREE, None)
        assert config is not None
        assert config.model == "gpt-4o"
        with worker.llm_call(config) as call:
            call.usage(1_000_000, 100_000)
        assert call.cost == pytest.approx(2.5 + 1.0)  # gpt-4o: $2.5 in, $10 out per Mtok
        doc = load_flags(FLAGS_FILE).to_builtins()
        doc["llm"]["prices"]["gpt-4o"]["input_per_mtok"] = 5.0
        revision = publisher.apply(doc)
        assert wait_until(lambda: worker.revision == revision, 5.0)
        with worker.llm_call(config) as call:
            call.usage(1_000_000, 0)
        assert call.cost == pytest.approx(5.0)

    def test_worker_sees_an_edit(self, publisher: Publisher, make_client: ClientFactory) -> None:
        """Editing the flag (e.g. removing a provider fleet-wide) changes what workers serve."""
        publisher.apply(FLAGS_FILE)
        worker = make_client(publisher.url)
        assert worker.wait_ready(5.0)
        before = worker.llm_config("chat-llm", FREE, None)
        assert before is not None
        assert len(before.fallbacks) == 1
        edited = load_flags(FLAGS_FILE).to_builtins()["flags"]["chat-llm"]
        del edited["variants"]["current"]["fallbacks"]
        publisher.put("chat-llm", edited)

        def fallbacks_gone() -> bool:
            now = worker.llm_config("chat-llm", FREE, None)
            return now is not None and now.fallbacks == () and now.version != before.version

        assert wait_until(fallbacks_gone, 5.0)


class TestVersionInStore:
    """A served config's version is its flag's store version plus its config's hash."""

    def test_version_follows_this_flag_only(
        self, publisher: Publisher, make_client: ClientFactory
    ) -> None:
        """Writes of another flag leave it; a write of this flag (even of another variant)
        bumps its number; after a restart (a whole load) it is the same."""
        publisher.apply(FLAGS_FILE)
        worker = make_client(publisher.url)
        assert worker.wait_ready(5.0)
        stored = publisher.get("chat-llm")
        assert stored is not None
        first = worker.llm_config("chat-llm", FREE, None)
        assert first is not None
        assert first.version is not None
        number, digest = first.version.split(".")
        assert number == str(stored.version)
        other = {"variants": {"a": 1, "b": 2}, "off": "a", "default": "a"}
        revision = publisher.put("unrelated", other)
        assert wait_until(lambda: worker.revision == revision, 5.0)
        same = worker.llm_config("chat-llm", FREE, None)
        assert same is not None
        assert same.version == first.version
        edited = load_flags(FLAGS_FILE).to_builtins()["flags"]["chat-llm"]
        edited["variants"]["candidate"]["params"]["temperature"] = 0.9  # not `current`
        revision = publisher.put("chat-llm", edited)
        assert wait_until(lambda: worker.revision == revision, 5.0)
        bumped = worker.llm_config("chat-llm", FREE, None)
        assert bumped is not None
        assert bumped.version == f"{stored.version + 1}.{digest}"
        fresh = make_client(publisher.url)  # a whole load, not a change message
        assert fresh.wait_ready(5.0)
        loaded = fresh.llm_config("chat-llm", FREE, None)
        assert loaded is not None
        assert loaded.version == bumped.version
        call_id = fresh.llm_call(loaded).id
        assert call_id is not None
        parsed = parse_call_id(call_id)
        assert parsed is not None
        assert parsed.version == bumped.version


class TestFastLoadPath:
    """The store's fast loader accepts no llm flag the full validation refuses."""

    def test_flag_problem_sees_llm_errors(self) -> None:
        """A stored llm flag with a bad parameter is sent to the general path."""
        good = load_flags({"flags": {"chat": chat_flag()}}).flags["chat"]
        bad = Flag(
            kind="llm",
            variants={"main": PRIMARY | {"params": {"temperature": 9}}},
            off="main",
            default="main",
        )
        assert flag_problem("chat", good, (), 100) is False
        assert flag_problem("chat", bad, (), 100) is True
