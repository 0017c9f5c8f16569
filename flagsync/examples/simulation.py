"""SIMULATED LLM backends: latency, tokens, cost and a quality signal per model.

Nothing here calls a model. Each "model" is a profile of numbers drawn from a seeded
random generator, so the demo is reproducible and needs no network; the flag logic
around these calls (which model, which prompt, which parameters, which fallback) is
real flagsync evaluation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["PROFILES", "Backend", "Completion", "ModelProfile", "SimulatedRateLimitError"]


@dataclass(frozen=True)
class ModelProfile:
    """How a simulated model behaves."""

    latency_ms: float
    latency_jitter_ms: float
    output_tokens: int
    cost_per_1k_tokens: float
    thumbs_down: float
    """Probability a user rates a completion down (the quality signal)."""
    rate_limited: float
    """Probability the primary provider answers 429 (then the fallback route is tried)."""


PROFILES: dict[str, ModelProfile] = {
    "gpt-4o": ModelProfile(620, 180, 380, 0.0050, 0.040, 0.02),
    "gpt-4.1": ModelProfile(540, 150, 350, 0.0040, 0.035, 0.03),
}
UNKNOWN_MODEL = ModelProfile(900, 300, 400, 0.0100, 0.100, 0.05)


@dataclass(frozen=True)
class Completion:
    """The outcome of one simulated request."""

    model: str
    provider: str
    latency_ms: float
    tokens: int
    cost: float
    thumbs_down: bool
    error: bool


class SimulatedRateLimitError(Exception):
    """A SIMULATED provider's HTTP 429 (the attribute the SDKs' errors carry too)."""

    status_code = 429


class Backend:
    """Draws simulated completions; `degraded` models get a worse quality signal."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self.degraded: set[str] = set()
        self.rate_limited_providers: set[str] = set()
        """Providers answering 429 to every LLM-config call (the demo's fallback episode)."""

    def call_provider(self, provider: str, model: str) -> tuple[int, int]:
        """One SIMULATED call of an LLM config option: (input, output) tokens, or a 429."""
        if provider in self.rate_limited_providers:
            raise SimulatedRateLimitError(f"429 from {provider} (simulated)")
        profile = PROFILES.get(model, UNKNOWN_MODEL)
        return 600 + self._random.randrange(400), int(profile.output_tokens)

    def complete(
        self,
        model: str,
        *,
        prompt_v2: bool,
        temperature: float,
        context_tokens: int,
        fallback: str,
    ) -> Completion:
        """One simulated call, following the fallback route when the primary rate-limits."""
        profile = PROFILES.get(model, UNKNOWN_MODEL)
        draw = self._random
        latency = max(50.0, draw.gauss(profile.latency_ms, profile.latency_jitter_ms))
        latency += context_tokens / 1000 * 4  # longer prompts take longer
        provider = "primary"
        if draw.random() < profile.rate_limited:
            if fallback == "none":
                return Completion(model, provider, latency, 0, 0.0, False, True)
            provider = fallback
            latency += 120  # the retry on the secondary provider
        tokens = int(profile.output_tokens * (0.6 + draw.random() * 0.8))
        prompt_tokens = min(context_tokens, 6000) // 4
        cost = (tokens + prompt_tokens) / 1000 * profile.cost_per_1k_tokens
        thumbs_down_rate = profile.thumbs_down * (0.85 if prompt_v2 else 1.0)
        thumbs_down_rate *= 1.0 + max(0.0, temperature - 0.5) * 0.2
        if model in self.degraded:
            thumbs_down_rate = min(0.9, thumbs_down_rate * 4.0)
        return Completion(
            model, provider, latency, tokens, cost, draw.random() < thumbs_down_rate, False
        )
