"""Resolution through the real OpenFeature client: values, variants, reasons, error codes
and metadata exactly as flagsync evaluates them, for every OpenFeature type."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode as OFErrorCode
from openfeature.flag_evaluation import Reason as OFReason

from flagsync import ErrorCode, FlagClient, Reason
from flagsync.openfeature import (
    ERROR_CODES,
    REASONS,
    FlagsyncProvider,
    ProviderOptionError,
    to_context,
)

PAID = {"attr": "plan", "op": "in", "values": ["paid"]}

FLAGS: dict[str, Any] = {
    "flags": {
        "model": {
            "variants": {"current": "gpt-4o", "candidate": "gpt-4.1"},
            "off": "current",
            "rules": [
                {"name": "paid-first", "when": [PAID], "serve": "candidate"},
                {
                    "name": "pro-split",
                    "when": [{"attr": "plan", "op": "in", "values": ["pro"]}],
                    "serve": {"rollout": {"candidate": 50, "current": 50}},
                },
            ],
            "default": "current",
        },
        "beta-ui": {"variants": {"on": True, "off": False}, "off": "off", "default": "on"},
        "killed": {
            "variants": {"on": True, "off": False},
            "enabled": False,
            "off": "off",
            "default": "on",
        },
        "needs-model": {
            "variants": {"on": True, "off": False},
            "off": "off",
            "requires": {"model": "candidate"},
            "default": "on",
        },
        "max-tokens": {"variants": {"short": 256, "long": 4096}, "off": "short", "default": "long"},
        "temperature": {"variants": {"low": 0.2, "one": 1.0}, "off": "low", "default": "one"},
        "integral-floats": {"variants": {"a": 1.0, "b": 2.0}, "off": "a", "default": "b"},
        "sampling": {"variants": {"v1": {"top_p": 0.9}}, "off": "v1", "default": "v1"},
        "stop-words": {"variants": {"v1": ["\n\n", "END"]}, "off": "v1", "default": "v1"},
    }
}


@pytest.fixture
def client(domain: str) -> OpenFeatureClient:
    """An OpenFeature client whose provider is a FlagsyncProvider over fixed flags."""
    api.set_provider_and_wait(FlagsyncProvider(FlagClient.offline(FLAGS)), domain)
    return api.get_client(domain)


def paid(key: str = "user-42") -> EvaluationContext:
    """A paid user's evaluation context."""
    return EvaluationContext(key, {"plan": "paid"})


class TestMappings:
    """Every flagsync reason and error code has its OpenFeature counterpart."""

    def test_every_reason_is_mapped_to_the_same_name(self) -> None:
        """Reasons map by name; PREREQUISITE_FAILED, which OpenFeature lacks, stays a
        provider-specific string as the specification allows."""
        assert set(REASONS) == set(Reason)
        assert {str(reason): str(of) for reason, of in REASONS.items()} == {
            str(reason): str(reason) for reason in Reason
        }
        assert set(OFReason) >= {REASONS[r] for r in Reason if r is not Reason.PREREQUISITE_FAILED}

    def test_every_error_code_is_mapped_to_the_same_name(self) -> None:
        """Each flagsync error code is OpenFeature's code of the same name."""
        assert set(ERROR_CODES) == set(ErrorCode)
        assert all(ERROR_CODES[code].value == code.value for code in ErrorCode)
        assert all(isinstance(of, OFErrorCode) for of in ERROR_CODES.values())

    @pytest.mark.parametrize(
        ("option", "value"),
        [("ready_timeout_s", -1.0), ("error_after_s", 0.0), ("error_after_s", float("nan"))],
    )
    def test_options_out_of_range_are_refused(self, option: str, value: float) -> None:
        """A negative, zero or NaN interval is refused with a message naming the option."""
        with pytest.raises(ProviderOptionError, match=f"^{option} must be at least"):
            FlagsyncProvider(FlagClient.offline(FLAGS), **{option: value})  # type: ignore[arg-type]

    def test_the_targeting_key_becomes_the_key_attribute(self) -> None:
        """The targeting key is flagsync's `key` and wins over a `key` attribute."""
        context = to_context(EvaluationContext("user-1", {"key": "other", "plan": "paid"}))
        assert context == {"key": "user-1", "plan": "paid"}
        assert to_context(EvaluationContext(None, {"key": "k"})) == {"key": "k"}
        assert to_context(None) == {}


class TestTypes:
    """Each OpenFeature type resolves the flags of its kind and refuses the others."""

    def test_string_with_variant_reason_rule_and_revision(self, client: OpenFeatureClient) -> None:
        """A rule match reports the variant, TARGETING_MATCH, the rule and the revision."""
        details = client.get_string_details("model", "fallback", paid())
        assert (details.value, details.variant, details.reason) == (
            "gpt-4.1",
            "candidate",
            OFReason.TARGETING_MATCH,
        )
        assert details.error_code is None
        assert details.flag_metadata == {
            "revision": 0,
            "namespace": "",
            "stale": False,
            "rule": "paid-first",
        }

    def test_boolean(self, client: OpenFeatureClient) -> None:
        """A boolean flag without rules is STATIC."""
        details = client.get_boolean_details("beta-ui", False, paid())
        assert (details.value, details.variant, details.reason) == (True, "on", OFReason.STATIC)

    def test_integer_of_an_all_integer_flag(self, client: OpenFeatureClient) -> None:
        """An all-integer number flag resolves as an int."""
        details = client.get_integer_details("max-tokens", 1, paid())
        assert details.value == 4096
        assert details.value.__class__ is int
        assert details.variant == "long"

    @pytest.mark.parametrize("key", ["temperature", "integral-floats"])
    def test_integer_of_a_float_flag_is_a_type_mismatch(
        self, client: OpenFeatureClient, key: str
    ) -> None:
        """A flag with a float variant (1.0 included) is a float flag: an integer request
        gets the default with TYPE_MISMATCH, whichever variant the user would get."""
        details = client.get_integer_details(key, 7, paid())
        assert (details.value, details.reason, details.error_code) == (
            7,
            OFReason.ERROR,
            OFErrorCode.TYPE_MISMATCH,
        )
        assert details.error_message == f"flag {key!r} is not an all-integer number flag"

    def test_float_of_an_integer_flag_is_converted(self, client: OpenFeatureClient) -> None:
        """A float request accepts an integer flag, converting its value exactly."""
        details = client.get_float_details("max-tokens", 0.5, paid())
        assert details.value == 4096.0
        assert details.value.__class__ is float
        assert client.get_float_details("temperature", 0.5, paid()).value == 1.0

    def test_object_of_objects_and_arrays(self, client: OpenFeatureClient) -> None:
        """An object request resolves both JSON objects and arrays."""
        assert client.get_object_details("sampling", {}, paid()).value == {"top_p": 0.9}
        assert client.get_object_details("stop-words", {}, paid()).value == ["\n\n", "END"]

    @pytest.mark.parametrize(
        ("method", "key", "default"),
        [
            ("get_boolean_details", "model", False),
            ("get_string_details", "beta-ui", "x"),
            ("get_integer_details", "beta-ui", 3),
            ("get_float_details", "beta-ui", 0.5),
            ("get_float_details", "model", 0.5),
            ("get_object_details", "model", {"d": 1}),
            ("get_object_details", "max-tokens", ["d"]),
        ],
    )
    def test_other_kinds_are_type_mismatches(
        self, client: OpenFeatureClient, method: str, key: str, default: Any
    ) -> None:
        """A flag of another kind serves the caller's default with TYPE_MISMATCH (booleans
        are not integers here, unlike in Python)."""
        details = getattr(client, method)(key, default, paid())
        assert details.value == default
        assert details.error_code == OFErrorCode.TYPE_MISMATCH
        assert details.reason == OFReason.ERROR


class TestReasons:
    """Every reason flagsync gives reaches the OpenFeature caller."""

    def test_split_default_disabled_and_prerequisite_failed(
        self, client: OpenFeatureClient
    ) -> None:
        """A rollout is SPLIT, a fall-through DEFAULT, a kill DISABLED, and an unmet
        prerequisite the provider-specific PREREQUISITE_FAILED, each with its variant."""
        split = client.get_string_details("model", "x", EvaluationContext("u-7", {"plan": "pro"}))
        assert (split.reason, split.flag_metadata["rule"]) == (OFReason.SPLIT, "pro-split")
        fallthrough = client.get_string_details("model", "x", EvaluationContext("u-7"))
        assert (fallthrough.value, fallthrough.reason) == ("gpt-4o", OFReason.DEFAULT)
        killed = client.get_boolean_details("killed", True, paid())
        assert (killed.value, killed.variant, killed.reason) == (False, "off", OFReason.DISABLED)
        unmet = client.get_boolean_details("needs-model", True, EvaluationContext("u-7"))
        assert (unmet.value, unmet.variant, unmet.reason) == (False, "off", "PREREQUISITE_FAILED")
        met = client.get_boolean_details("needs-model", False, paid())
        assert (met.value, met.reason) == (True, OFReason.STATIC)

    def test_flag_not_found(self, client: OpenFeatureClient) -> None:
        """An unknown flag serves the default with FLAG_NOT_FOUND and a message naming it."""
        details = client.get_string_details("no-such-flag", "d", paid())
        assert (details.value, details.error_code) == ("d", OFErrorCode.FLAG_NOT_FOUND)
        assert details.error_message == "flag 'no-such-flag' is not defined in this namespace"

    def test_targeting_key_missing(self, client: OpenFeatureClient) -> None:
        """A rollout without its bucketing attribute serves the default with
        TARGETING_KEY_MISSING, naming the rule it reached."""
        details = client.get_string_details("model", "d", EvaluationContext(None, {"plan": "pro"}))
        assert (details.value, details.error_code) == ("d", OFErrorCode.TARGETING_KEY_MISSING)
        assert details.flag_metadata["rule"] == "pro-split"

    def test_async_resolution_matches_sync(self, client: OpenFeatureClient) -> None:
        """The async API resolves every type to the same details as the sync API."""

        async def resolve_all() -> list[Any]:
            return [
                await client.get_string_details_async("model", "x", paid()),
                await client.get_boolean_details_async("beta-ui", False, paid()),
                await client.get_integer_details_async("max-tokens", 0, paid()),
                await client.get_float_details_async("temperature", 0.0, paid()),
                await client.get_object_details_async("sampling", {}, paid()),
                await client.get_integer_details_async("temperature", 0, paid()),
            ]

        expected = [
            client.get_string_details("model", "x", paid()),
            client.get_boolean_details("beta-ui", False, paid()),
            client.get_integer_details("max-tokens", 0, paid()),
            client.get_float_details("temperature", 0.0, paid()),
            client.get_object_details("sampling", {}, paid()),
            client.get_integer_details("temperature", 0, paid()),
        ]
        assert asyncio.run(resolve_all()) == expected

    def test_odd_contexts_never_raise(self, client: OpenFeatureClient) -> None:
        """Attributes flagsync cannot bucket or compare give defaults or non-matches, never
        an exception."""
        odd = EvaluationContext(None, {"plan": ["pro"], "key": {"nested": [1]}})
        details = client.get_string_details("model", "d", odd)
        assert (details.value, details.error_code) == ("d", OFErrorCode.TARGETING_KEY_MISSING)
        assert client.get_string_details("model", "d", EvaluationContext("u", {"plan": 3})).value
