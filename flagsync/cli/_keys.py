"""`keygen`: make the Ed25519 key pair of signed mode (README "Signed mode").

The private key goes to a file only its owner can read (0600, created exclusively: an
existing key is never overwritten unless `--force`); the public key, one line, goes to
`<file>.pub` and to stdout, for `verify_keys=[...]` / `FLAGSYNC_VERIFY_KEYS`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from flagsync.cli._registry import EXIT_FAILED, EXIT_OK, Command, arg
from flagsync.cli._shared import note


def keygen(args: argparse.Namespace) -> int:
    """Write a new key pair; exit 1 when the key file exists (and no --force)."""
    from flagsync._signing import generate_key_pair  # noqa: PLC0415 - loads cryptography

    private_path = Path(args.out)
    public_path = Path(f"{args.out}.pub")
    if not args.force and (private_path.exists() or public_path.exists()):
        note(f"{private_path} or {public_path} exists; nothing was written (--force replaces)")
        return EXIT_FAILED
    pem, public = generate_key_pair()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if args.force else os.O_EXCL)
    descriptor = os.open(private_path, flags, 0o600)
    with os.fdopen(descriptor, "wb") as private_file:
        os.fchmod(private_file.fileno(), 0o600)  # also when --force replaced a looser file
        private_file.write(pem)
    public_path.write_text(public + "\n")
    if args.json:
        print(json.dumps({"private_key": str(private_path), "public_key": public}))
    else:
        print(public)
        note(f"private key: {private_path} (0600: give it to publishers only)")
        note(f"public key: {public_path} (give it to workers: verify_keys / FLAGSYNC_VERIFY_KEYS)")
    return EXIT_OK


COMMANDS = (
    Command(
        "keygen",
        "write an Ed25519 key pair for signed mode (private 0600, public .pub)",
        keygen,
        (
            arg("out", help="private key file to create; the public key goes to OUT.pub"),
            arg("--force", action="store_true", help="replace existing key files"),
        ),
    ),
)
