"""Keeping a connected client's snapshot current (private: reach it through `FlagClient`).

One job per module, in the order data flows: `options` (timing), `follower` (the pure
decisions), `presence` (who this process is in the fleet view), `timers` (session
deadlines and retry backoff), `lkg` (the last-known-good file), `thread_driver` and
`async_driver` (the I/O loops), `wiring` (builds them and returns a `SyncHandle`).
"""
