"""Signed mode's keys and records (`flagsync._signing`): what is signed binds the
namespace, epoch, revision, digest, payload and time; any change, an unknown key or a
malformed record is refused; several keys verify during a rotation."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest

from flagsync._signing import (
    PUBLIC_KEY_PREFIX,
    SignatureRejected,
    SignedState,
    Signer,
    SigningKeyError,
    Verifier,
    generate_key_pair,
    verifier_from,
)
from flagsync.cli import main

STATE = SignedState("ns", "epoch-1", 7, "d" * 40, "a" * 64, 1_700_000_000_000)


def key_file(tmp_path: Path, name: str = "key") -> tuple[Path, str]:
    """A private key file and its public line."""
    pem, public = generate_key_pair()
    path = tmp_path / name
    path.write_bytes(pem)
    return path, public


def verify(verifier: Verifier, record: str | None, state: SignedState = STATE) -> SignedState:
    """Verify `record` for `state`'s place in history."""
    return verifier.verify(
        record,
        namespace=state.namespace,
        epoch=state.epoch,
        revision=state.revision,
        digest=state.digest,
    )


class TestRecords:
    """A record verifies for exactly the state it was made for."""

    def test_round_trip(self, tmp_path: Path) -> None:
        """A record verifies and gives back the payload hash and time it covers."""
        path, public = key_file(tmp_path)
        assert verify(Verifier([public]), Signer(path).sign(STATE)) == STATE

    @pytest.mark.parametrize(
        "change",
        [
            {"namespace": "other"},
            {"epoch": "epoch-2"},
            {"revision": 8},
            {"digest": "e" * 40},
        ],
    )
    def test_another_place_or_content_is_refused(
        self, tmp_path: Path, change: dict[str, object]
    ) -> None:
        """The same record for another namespace, epoch, revision or digest is refused."""
        path, public = key_file(tmp_path)
        record = Signer(path).sign(STATE)
        with pytest.raises(SignatureRejected, match="bad signature"):
            verify(Verifier([public]), record, dataclasses.replace(STATE, **change))  # type: ignore[arg-type]

    def test_tampered_payload_hash_or_time_is_refused(self, tmp_path: Path) -> None:
        """Editing the payload hash or the time inside a record breaks its signature."""
        path, public = key_file(tmp_path)
        key, signed_ms, payload, signature = Signer(path).sign(STATE).split(".")
        for record in (
            f"{key}.{signed_ms}.{'b' * 64}.{signature}",
            f"{key}.{int(signed_ms) + 1}.{payload}.{signature}",
        ):
            with pytest.raises(SignatureRejected, match="bad signature"):
                verify(Verifier([public]), record)

    @pytest.mark.parametrize("record", [None, "", "nonsense", "0" * 16 + ".1." + "a" * 64 + ".x"])
    def test_unsigned_or_malformed_is_refused(self, tmp_path: Path, record: str | None) -> None:
        """No record, or one that is not a record, is refused with the reason."""
        _, public = key_file(tmp_path)
        with pytest.raises(SignatureRejected, match=r"unsigned|malformed"):
            verify(Verifier([public]), record)

    def test_unknown_key_is_refused(self, tmp_path: Path) -> None:
        """A record made by a key the worker does not hold is refused, naming the key id."""
        path, _ = key_file(tmp_path, "one")
        _, other = key_file(tmp_path, "two")
        with pytest.raises(SignatureRejected, match="unknown key"):
            verify(Verifier([other]), Signer(path).sign(STATE))


class TestKeys:
    """Key loading and rotation."""

    def test_rotation_accepts_both_keys(self, tmp_path: Path) -> None:
        """A worker given the old and the new public key accepts records of either."""
        old_path, old = key_file(tmp_path, "old")
        new_path, new = key_file(tmp_path, "new")
        verifier = Verifier([old, new])
        assert verify(verifier, Signer(old_path).sign(STATE)) == STATE
        assert verify(verifier, Signer(new_path).sign(STATE)) == STATE

    def test_public_key_from_a_file_or_the_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A verify key may be a file holding the line; FLAGSYNC_VERIFY_KEYS lists keys."""
        path, public = key_file(tmp_path)
        (tmp_path / "key.pub").write_text(public + "\n")
        assert verify(Verifier([str(tmp_path / "key.pub")]), Signer(path).sign(STATE)) == STATE
        monkeypatch.setenv("FLAGSYNC_VERIFY_KEYS", f" ,{public}")
        verifier = verifier_from(())
        assert verifier is not None
        assert verify(verifier, Signer(path).sign(STATE)) == STATE
        monkeypatch.delenv("FLAGSYNC_VERIFY_KEYS")
        assert verifier_from(()) is None

    @pytest.mark.parametrize(
        "given", ["flagsync-ed25519:AAAA", "flagsync-ed25519:@@", "/no/such/file"]
    )
    def test_bad_verify_keys_are_refused(self, given: str) -> None:
        """A key of the wrong length, bad base64 or an unreadable path is a SigningKeyError."""
        with pytest.raises(SigningKeyError, match="verify key"):
            Verifier([given])

    def test_bad_signing_key_is_refused(self, tmp_path: Path) -> None:
        """A file that is no PEM private key is a SigningKeyError naming the file."""
        (tmp_path / "bad").write_text("not a key")
        with pytest.raises(SigningKeyError, match="bad"):
            Signer(tmp_path / "bad")


class TestKeygen:
    """`flagsync keygen` writes a usable pair, the private half readable by its owner only."""

    def test_writes_a_private_0600_and_a_public_pair(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The private key is 0600, the public line printed and in OUT.pub; they match."""
        out = tmp_path / "signing"
        assert main(["keygen", str(out)]) == 0
        public = capsys.readouterr().out.strip()
        assert public.startswith(PUBLIC_KEY_PREFIX)
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        assert (tmp_path / "signing.pub").read_text().strip() == public
        assert verify(Verifier([public]), Signer(out).sign(STATE)) == STATE

    def test_never_overwrites_without_force(self, tmp_path: Path) -> None:
        """An existing key file is kept (exit 1); --force replaces it, still 0600."""
        out = tmp_path / "signing"
        out.write_text("keep me")
        out.chmod(0o644)
        assert main(["keygen", str(out)]) == 1
        assert out.read_text() == "keep me"
        assert main(["keygen", str(out), "--force"]) == 0
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
