"""Example inference workers for flagsync's demo (simulated LLM backends, real flags).

Run one with `python -m workers.inference --url redis://... --index 0`. The flagsync
library never imports this package; `flagsync demo` starts workers as processes.
"""
