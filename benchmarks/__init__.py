"""Speed, memory and quality benchmarks, run by `make bench` (python -m benchmarks)."""
