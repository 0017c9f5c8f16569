"""The example inference worker of flagsync's demo (simulated LLM backends, real flags).

Run one with `python -m flagsync.examples.inference --url redis://... --index 0`. It is
installed with flagsync (so `flagsync demo` works from a wheel) under flagsync's own
name, never as a top-level package; the library never imports it: `flagsync demo`
starts workers as processes.
"""

__all__: list[str] = []
