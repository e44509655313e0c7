"""Speed, memory and quality benchmarks, run by `make bench` (python -m benchmarks)."""

from aftersale.typechecks import library_typechecks_off

# Feast's type checks cost seconds at import and nothing a correct call needs.
library_typechecks_off()
