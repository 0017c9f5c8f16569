"""Signed mode: Ed25519 signatures over a namespace's state, made by publishers, checked
by workers.

What is signed binds content to its place in history: the namespace, the epoch, the
revision, the state digest (`flagsync._digest`, which covers every flag and segment
blob), the SHA-256 of the change payload, and the publisher's clock in ms. A worker that
applies a message checks the digest its own state reaches; a worker that loads the whole
store recomputes the digest from the blobs: one signature covers either. The record
travels in the message and is stored beside the revision (`{fs:<ns>}:sig`):

    <key id>.<signed ms>.<payload sha256 hex>.<signature, base64url>

`cryptography` is imported only when a key is configured: a client without signing never
loads it (it is in the `signing` extra; see the README's "Signed mode").
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from flagsync.errors import FlagsyncError

__all__ = [
    "PUBLIC_KEY_PREFIX",
    "SignatureRejected",
    "SignedState",
    "Signer",
    "UntrustedStateError",
    "Verifier",
    "generate_key_pair",
    "verifier_from",
]

PUBLIC_KEY_PREFIX: Final = "flagsync-ed25519:"
"""A public key as one line: this prefix and the 32 raw bytes in base64 (what keygen prints)."""
_CONTEXT: Final = b"flagsync-state-v1"
_RECORD: Final = re.compile(r"^([0-9a-f]{16})\.(\d{1,16})\.([0-9a-f]{64})\.([A-Za-z0-9_-]{86})$")


class SignatureRejected(FlagsyncError):  # noqa: N818 - a verdict, raised and reported as such
    """A change or snapshot is unsigned, badly signed, or signed by no configured key."""


class UntrustedStateError(FlagsyncError):
    """A signing publisher refused to sign on top of a state no trusted key signed: it may
    hold changes made without the key, which a new signature would vouch for."""


class SigningKeyError(FlagsyncError):
    """A signing or verify key cannot be read or is not an Ed25519 key."""


@dataclass(frozen=True)
class SignedState:
    """What a signature covers."""

    namespace: str
    epoch: str
    revision: int
    digest: str
    payload_sha256: str
    signed_ms: int

    def message(self) -> bytes:
        """The bytes signed (fields separated by newlines, which none can contain)."""
        fields = (
            self.namespace,
            self.epoch,
            str(self.revision),
            self.digest,
            self.payload_sha256,
            str(self.signed_ms),
        )
        return _CONTEXT + b"\n" + "\n".join(fields).encode()


def _require_cryptography() -> None:
    """Signed mode needs `cryptography` (the `signing` extra); say so, not ImportError."""
    try:
        import cryptography  # noqa: F401, PLC0415 - only probing that it is installed
    except ImportError as error:
        raise SigningKeyError(
            "signed mode needs the 'cryptography' package: pip install 'flagsync[signing]'"
        ) from error


def key_id(public_raw: bytes) -> str:
    """A short id of a public key (which key signed is in every record)."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def generate_key_pair() -> tuple[bytes, str]:
    """A new key pair: the private key as PKCS#8 PEM, the public key as one line."""
    _require_cryptography()
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - lazy: optional
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PrivateKey,
    )

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, public_line(private.public_key())


def public_line(public: Any) -> str:
    """An Ed25519 public key object as the one-line form."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode()


class Signer:
    """Signs states with a private key read from a PEM file (what `flagsync keygen` wrote)."""

    def __init__(self, path: str | Path, *, adopt_unsigned: bool = False) -> None:
        _require_cryptography()
        from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
            Ed25519PrivateKey,
        )

        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as error:
            raise SigningKeyError(f"signing key {str(path)!r}: cannot load: {error}") from error
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"signing key {str(path)!r}: not an Ed25519 private key")
        self._key = key
        self.public_key = public_line(key.public_key())
        self.key_id = key_id(base64.b64decode(self.public_key.removeprefix(PUBLIC_KEY_PREFIX)))
        self.adopt_unsigned = adopt_unsigned
        """Sign on top of a state no trusted key signed (else `UntrustedStateError`)."""
        self._trusted: Verifier | None = None

    def trusted(self) -> Verifier:
        """What states this publisher builds on must be signed by: its own key and any
        in `FLAGSYNC_VERIFY_KEYS` (a rotation's old key)."""
        if self._trusted is None:
            extra = os.environ.get("FLAGSYNC_VERIFY_KEYS", "").split(",")
            self._trusted = Verifier([self.public_key, *(key for key in extra if key.strip())])
        return self._trusted

    def sign(self, state: SignedState) -> str:
        """The signature record of `state`."""
        signature = base64.urlsafe_b64encode(self._key.sign(state.message())).rstrip(b"=")
        return f"{self.key_id}.{state.signed_ms}.{state.payload_sha256}.{signature.decode()}"


class Verifier:
    """Checks signature records against one or more public keys (several: rotation)."""

    def __init__(self, public_keys: Iterable[str]) -> None:
        _require_cryptography()
        from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
            Ed25519PublicKey,
        )

        self._keys: dict[str, Any] = {}
        for given in public_keys:
            raw = _public_raw(given)
            self._keys[key_id(raw)] = Ed25519PublicKey.from_public_bytes(raw)
        if not self._keys:
            raise SigningKeyError("verify_keys: no public key given")

    def verify(
        self, record: str | None, *, namespace: str, epoch: str, revision: int, digest: str
    ) -> SignedState:
        """The state `record` signs for (epoch, revision, digest); raises `SignatureRejected`."""
        from cryptography.exceptions import InvalidSignature  # noqa: PLC0415

        if not record:
            raise SignatureRejected(f"revision {revision} is unsigned")
        match = _RECORD.match(record)
        if match is None:
            raise SignatureRejected(f"revision {revision}: malformed signature record")
        signer, signed_ms, payload_sha256, signature = match.groups()
        public = self._keys.get(signer)
        if public is None:
            raise SignatureRejected(f"revision {revision}: signed by unknown key {signer}")
        state = SignedState(namespace, epoch, revision, digest, payload_sha256, int(signed_ms))
        try:
            public.verify(base64.urlsafe_b64decode(signature + "=="), state.message())
        except InvalidSignature:
            raise SignatureRejected(
                f"revision {revision}: bad signature (content, digest or place in history "
                "differs from what was signed)"
            ) from None
        return state


def _public_raw(given: str) -> bytes:
    """The raw 32 bytes of a public key given as the one-line form or a file holding it."""
    text = given.strip()
    if not text.startswith(PUBLIC_KEY_PREFIX):
        try:
            text = Path(text).read_text().strip()
        except OSError as error:
            raise SigningKeyError(
                f"verify key {given!r}: neither '{PUBLIC_KEY_PREFIX}...' nor a readable file"
            ) from error
    try:
        raw = base64.b64decode(text.removeprefix(PUBLIC_KEY_PREFIX), validate=True)
    except ValueError as error:
        raise SigningKeyError(f"verify key {given!r}: bad base64: {error}") from error
    if not text.startswith(PUBLIC_KEY_PREFIX) or len(raw) != 32:
        raise SigningKeyError(f"verify key {given!r}: not a {PUBLIC_KEY_PREFIX} public key")
    return raw


def verifier_from(public_keys: Iterable[str]) -> Verifier | None:
    """The verifier of `public_keys`, else of `FLAGSYNC_VERIFY_KEYS` (comma-separated);
    None when neither names a key (unsigned mode)."""
    keys = [key for key in public_keys if key]
    if not keys:
        keys = [key for key in os.environ.get("FLAGSYNC_VERIFY_KEYS", "").split(",") if key.strip()]
    return Verifier(keys) if keys else None


def signer_from(path: str | Path | None, *, adopt_unsigned: bool = False) -> Signer | None:
    """The signer of `path`, else of `FLAGSYNC_SIGNING_KEY`; None when neither is set.
    `adopt_unsigned` (or `FLAGSYNC_ADOPT_UNSIGNED=1`): sign on top of a state no trusted
    key signed (the first signed write of a store, after a review)."""
    chosen = path if path is not None else os.environ.get("FLAGSYNC_SIGNING_KEY") or None
    if chosen is None:
        return None
    adopt = adopt_unsigned or os.environ.get("FLAGSYNC_ADOPT_UNSIGNED") == "1"
    return Signer(chosen, adopt_unsigned=adopt)
