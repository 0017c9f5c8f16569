"""What the state digest and signed mode cost a worker: per applied change and per full
load (issue #11). Reported, not budgeted: the numbers are small beside a network round
trip, and Ed25519 speed depends on the `cryptography` build.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from flagsync._codec import encode_definition
from flagsync._digest import StateDigest
from flagsync._signing import SignedState, Signer, Verifier, generate_key_pair


def run(*, quick: bool) -> dict[str, Any]:
    """Digest and signature costs for stores of 1,000 and 10,000 flags (µs)."""
    repeats = 5 if quick else 15
    pem, public = generate_key_pair()
    with tempfile.TemporaryDirectory() as directory:
        key = Path(directory) / "signing"
        key.write_bytes(pem)
        signer = Signer(key)
    verifier = Verifier([public])
    state = SignedState("bench", "epoch", 42, "d" * 40, "a" * 64, 1_700_000_000_000)
    record = signer.sign(state)

    def verify() -> None:
        verifier.verify(record, namespace="bench", epoch="epoch", revision=42, digest="d" * 40)

    results: dict[str, Any] = {
        "sign_us": _median_us(lambda: signer.sign(state), repeats * 20),
        "verify_us": _median_us(verify, repeats * 20),
    }
    for count in (1_000, 10_000):
        flags = {
            f"flag-{index}": encode_definition(
                "flag", f"flag-{index}", 1, {"variants": {"on": True, "off": False}, "off": "off"}
            )
            for index in range(count)
        }
        digest = StateDigest.of_store(flags, {})
        change = [("flag", "flag-7", flags["flag-8"])]
        load_us = _median_us(partial(StateDigest.of_store, flags, {}), repeats)
        change_us = _median_us(partial(digest.preview, change), repeats * 20)
        payload_us = _median_us(partial(hashlib.sha256, b"x" * 400), 50)
        results[f"flags_{count}"] = {
            "digest_per_change_us": change_us,
            "digest_per_full_load_us": load_us,
            "signed_change_us": round(change_us + results["verify_us"] + payload_us, 1),
            "signed_full_load_us": round(load_us + results["verify_us"], 1),
        }
    return results


def _median_us(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - started)
    times.sort()
    return round(times[len(times) // 2] / 1000, 1)


def print_results(results: dict[str, Any]) -> None:
    """The integrity rows of the benchmark table."""
    print(
        f"integrity: Ed25519 sign {results['sign_us']} µs, verify {results['verify_us']} µs "
        "(one verify per change and one per full load)"
    )
    for name, row in results.items():
        if not name.startswith("flags_"):
            continue
        print(
            f"  {name:<12} digest per change {row['digest_per_change_us']} µs, per full load "
            f"{row['digest_per_full_load_us']} µs | signed: per change {row['signed_change_us']}"
            f" µs, per full load {row['signed_full_load_us']} µs"
        )
