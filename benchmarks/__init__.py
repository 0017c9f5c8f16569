"""flagsync's benchmark suite: `python -m benchmarks [--quick] [--json PATH] [--check]`."""
