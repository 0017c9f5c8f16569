"""LLM configs as flags: validated variants, typed configs, provider fallback, telemetry.

A flag with `kind: llm` holds one LLM config per variant (provider, model, params,
messages, fallbacks, ...). `FlagClient.llm_config` serves it as a frozen `LLMConfig`,
`FallbackRouter` calls a provider and falls back on listed failures, and
`FlagClient.llm_call` tracks each call into the rollout metrics.
"""
