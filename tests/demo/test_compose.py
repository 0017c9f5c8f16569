"""compose.yaml: Docker is not available here, so check what can be checked without it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from flagsync import load_flags
from flagsync.cli import build_parser
from flagsync.examples.inference import build_parser as worker_parser

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return document


class TestCompose:
    """The compose file names real commands with arguments they accept."""

    def test_services(self) -> None:
        """There is a Redis service, an operator job and a scaled worker service."""
        services = _compose()["services"]
        assert set(services) == {"redis", "operator", "worker"}
        assert services["worker"]["deploy"]["replicas"] >= 2
        assert services["operator"]["environment"]["REDIS_URL"].startswith("redis://redis:")

    def test_operator_command_parses(self) -> None:
        """The operator runs `flagsync apply -f examples/flags.yaml`, which parses and validates."""
        command = _compose()["services"]["operator"]["command"]
        assert command[0] == "flagsync"
        args = build_parser().parse_args(command[1:])
        assert args.command == "apply"
        assert len(load_flags(ROOT / args.file).flags) >= 5

    def test_worker_command_parses(self) -> None:
        """The worker runs `python -m flagsync.examples.inference` with options it accepts."""
        command = _compose()["services"]["worker"]["command"]
        assert command[:3] == ["python", "-m", "flagsync.examples.inference"]
        args = worker_parser().parse_args(command[3:])
        assert args.rps > 0

    def test_dockerfile_copies_what_exists(self) -> None:
        """Every path the Dockerfile copies exists in the repository."""
        copies = [
            line.split()[1:-1]
            for line in (ROOT / "Dockerfile").read_text().splitlines()
            if line.startswith("COPY ")
        ]
        for sources in copies:
            for source in sources:
                assert (ROOT / source).exists(), source
