"""What a follower knows to verify its state against the store: the state digest of what
it applied, the digest the store states, and in signed mode the signed state applied
last (DESIGN.md "Integrity (contract)").

Kept apart from `follower` so the follower's rules read as rules: it asks this class
whether a message may apply, whether a load may be installed, and whether a check shows
a divergence. Pure: no I/O, the clock is a parameter.
"""

from __future__ import annotations

from collections.abc import Callable

from flagsync._codec import Message
from flagsync._digest import StateDigest
from flagsync._signing import SignatureRejected, SignedState, verifier_from
from flagsync._sync.llm_section import LLM_CHANGE_KIND
from flagsync._sync.logs import SafeLogger
from flagsync.store import Heartbeat, LoadedStore, StoreKeys, StoreState

__all__ = ["Integrity"]

_log = SafeLogger("flagsync.subscriber")  # never raises: see flagsync._sync.logs


class Integrity:
    """The digest and signature side of one follower."""

    def __init__(
        self,
        keys: StoreKeys,
        verify_keys: tuple[str, ...],
        counts: dict[str, int],
        clock: Callable[[], float],
    ) -> None:
        self.keys = keys
        self._counts = counts
        self._clock = clock
        self._digest: StateDigest | None = None
        self._unhashed: LoadedStore | None = None
        """A load installed whose digest is not computed yet (unsigned mode: off the
        cold-start path; `settle` or the first use computes it)."""
        self._entries = 0
        """Flags + segments of what we applied."""
        self.store_digest: str | None = None
        """The digest the store states for our revision (what checks compare)."""
        self._verifier = verifier_from(verify_keys)
        """Signed mode when not None: nothing unsigned or badly signed is applied."""
        self._signed: SignedState | None = None
        """The signed state applied last (signed mode): older ones are replays."""
        self._pending: SignedState | None = None
        self._refused: StoreState | None = None
        """The store state whose load was refused (checks do not reload it)."""
        self._unexplained: StoreState | None = None
        """A next-revision message whose digest did not follow from our state."""
        self._diverged: StoreState | None = None
        self._last_log = float("-inf")
        self._loaded: StateDigest | None = None
        self.last_rejection: str | None = None
        self._heartbeat_verified: tuple[str, str, int, str] | None = None
        """The last heartbeat whose signature verified (beats repeat it until a write)."""

    @property
    def digest(self) -> StateDigest | None:
        """The digest of what we applied (None: unknown, e.g. a last-known-good file)."""
        loaded = self._unhashed
        if loaded is not None:
            self._unhashed = None
            self._digest = StateDigest.of_store(loaded.flags, loaded.segments)
            self._check_stated(loaded, self._digest)
        return self._digest

    def heartbeat_fits(self, heartbeat: Heartbeat) -> bool:
        """In signed mode, the heartbeat carries a valid signature record of the state it
        states (the one the last write stored); unsigned mode takes any heartbeat (it can
        only make checks come sooner, never later than `beacon_check_interval_s`)."""
        if self._verifier is None:
            return True
        place = (heartbeat.signature, heartbeat.epoch, heartbeat.revision, heartbeat.digest)
        if place == self._heartbeat_verified:
            return True
        try:
            self._verify(*place)
        except SignatureRejected:
            return False
        self._heartbeat_verified = place
        return True

    def settle(self) -> None:
        """Compute a pending digest now (the driver calls it after a load, once ready)."""
        _ = self.digest

    # -- messages ----------------------------------------------------------------

    def is_duplicate(self, message: Message) -> bool:
        """The message of the state we hold (our revision and digest), received again."""
        return message.digest == self.store_digest

    def message_fits(self, message: Message, serving: int) -> bool:
        """In signed mode, the message is validly signed for its place and payload; and
        its digest is what our state becomes with its changes. False: do not apply."""
        digest, changes = self.digest, message.changes
        if digest is None or changes is None:
            return False
        if self._verifier is not None:
            try:
                signed = self._verify(
                    message.signature, message.epoch, message.revision, message.digest
                )
                if signed.payload_sha256 != message.payload_sha256:
                    raise SignatureRejected(  # noqa: TRY301 - one handler for every refusal
                        f"revision {message.revision}: the payload is not the one signed"
                    )
            except SignatureRejected as error:
                self._reject(str(error), serving)
                return False
            self._pending = signed
        digested = (  # the `llm:` section is not in the digest (see `llm_section`)
            (c.kind, c.key, c.blob) for c in changes.changes if c.kind != LLM_CHANGE_KIND
        )
        if digest.preview(digested) != message.digest:
            # Not the store's next state from ours: forged, or ours is not the store's
            # (the check tells: the store at this very state means we diverged).
            self._unexplained = StoreState(message.revision, message.epoch, message.digest)
            self._pending = None
            return False
        return True

    def message_applied(self, message: Message) -> None:
        """The message `message_fits` accepted was applied."""
        digest = self.digest
        assert digest is not None
        assert message.changes is not None
        digest.commit()  # what `message_fits` previewed
        self._entries = len(digest)
        self.store_digest = message.digest
        self._signed = self._pending or self._signed
        self._pending = None
        self.last_rejection = None

    # -- whole-store loads -------------------------------------------------------------

    def load_fits(self, loaded: LoadedStore, serving: int) -> bool:
        """False when signed mode refuses a loaded store (unsigned, badly signed, or
        older than the signed state applied: a replay). Signed mode hashes it now (one
        signature covers the digest); unsigned mode after it is installed."""
        self._loaded = None
        if self._verifier is None or loaded.epoch is None:
            return True
        digest = StateDigest.of_store(loaded.flags, loaded.segments)
        try:
            signed = self._verify(loaded.signature, loaded.epoch, loaded.revision, digest.value)
            self._refuse_replay(signed)
        except SignatureRejected as error:
            self._refused = StoreState(loaded.revision, loaded.epoch, loaded.digest)
            self._reject(str(error), serving)
            return False
        self._pending = signed
        self._loaded = digest
        return True

    def load_applied(self, loaded: LoadedStore) -> None:
        """The load `load_fits` accepted was installed."""
        self._digest, self._loaded = self._loaded, None
        self._unhashed = loaded if self._digest is None else None
        self._entries = len(loaded.flags) + len(loaded.segments)
        self.store_digest = loaded.digest
        if self._digest is not None:
            self._check_stated(loaded, self._digest)
        self._signed = self._pending or self._signed
        self._pending = None
        self._refused = None
        self.last_rejection = None

    def _check_stated(self, loaded: LoadedStore, digest: StateDigest) -> None:
        """Warn when the store's stated digest is not its content's; adopt ours if it
        states none (a store older than digests)."""
        if loaded.digest is None:
            if self.store_digest is None:
                self.store_digest = digest.value
            return
        if loaded.digest != digest.value:
            # The store's digest records disagree with its content (hashes changed behind
            # the write script's back); its next write re-seeds them. Checks compare with
            # what the store states, or every check would reload.
            _log.warning(
                "store_digest_mismatch",
                namespace=self.keys.namespace,
                revision=loaded.revision,
                stated=loaded.digest,
                computed=digest.value,
            )

    def same_load(self, loaded: LoadedStore) -> None:
        """A load found exactly the blobs we hold at our revision."""
        self.store_digest = loaded.digest or self.store_digest

    # -- checks ------------------------------------------------------------------

    def refused(self, state: StoreState) -> bool:
        """The store still holds the state whose load signed mode refused."""
        return self._refused is not None and state.place == self._refused.place

    def same_digest(self, state: StoreState) -> bool:
        """The store states our digest (or no digest at all: a store older than digests)
        and holds as many entries as we applied."""
        if state.entries is not None and self._entries and state.entries != self._entries:
            return False  # a hash changed behind the write script's back
        if state.digest is None:
            return True
        if self.store_digest is None:
            self.settle()  # a load from a store that stated no digest: ours is the one
        return state.digest == self.store_digest

    def note_difference(self, state: StoreState, epoch: str, revision: int) -> None:
        """A check found the store elsewhere: count a divergence (our state is not the
        store's at the same epoch: a restored backup, a lagging replica promoted, a forged
        message applied), logged once per store state."""
        behind = revision > state.revision
        same_place = revision == state.revision and not self.same_digest(state)
        unexplained = self._unexplained is not None and state.place == self._unexplained.place
        if not unexplained and not (state.epoch == epoch and (behind or same_place)):
            return  # the store is simply ahead: a lost or pending message
        if self._diverged is not None and self._diverged.place == state.place:
            return
        self._diverged = state
        self._counts["state_diverged"] += 1
        _log.warning(
            "state_diverged",
            namespace=self.keys.namespace,
            epoch=state.epoch,
            store_revision=state.revision,
            store_digest=state.digest,
            revision=revision,
            digest=self.store_digest,
            total=self._counts["state_diverged"],
        )

    def reset(self) -> None:
        """Nothing of the store is known any more (a forked child keeps its snapshot)."""
        self._refused = None
        self._unexplained = None

    # -- internals ---------------------------------------------------------------

    def _verify(self, record: str | None, epoch: str, revision: int, digest: str) -> SignedState:
        assert self._verifier is not None
        return self._verifier.verify(
            record, namespace=self.keys.namespace, epoch=epoch, revision=revision, digest=digest
        )

    def _refuse_replay(self, signed: SignedState) -> None:
        """Raise when `signed` is older than the signed state we applied (a replay)."""
        current = self._signed
        if current is None:
            return  # nothing signed applied yet: the README says what this cannot catch
        if signed.epoch == current.epoch:
            older = signed.revision < current.revision or (
                signed.revision == current.revision
                and signed.digest != current.digest
                and signed.signed_ms <= current.signed_ms
            )
        else:
            older = signed.signed_ms < current.signed_ms
        if older:
            raise SignatureRejected(
                f"replay: revision {signed.revision} (signed at {signed.signed_ms} ms) is older "
                f"than the signed revision {current.revision} (signed at {current.signed_ms} "
                "ms) already applied"
            )

    def _reject(self, reason: str, serving: int) -> None:
        """Signed mode refused a change or snapshot: counted, in `status()`, logged."""
        self._counts["signature_rejected"] += 1
        self.last_rejection = f"signature rejected: {reason}"
        now = self._clock()
        if now - self._last_log >= 1.0:  # rate-limited like malformed messages
            self._last_log = now
            _log.error(
                "signature_rejected",
                namespace=self.keys.namespace,
                security=True,
                reason=reason[:500],
                serving_revision=serving,
                total=self._counts["signature_rejected"],
            )
