"""The built-in simulator: a seeded, scalable synthetic post-purchase business.

`simulate` writes the contract tables and, beside them, `_truth/` with the true probabilities
of its delay, churn and acceptance mechanisms and the true effect of every logged outreach.
`simulate_until` and `simulate_day` write the same business as a history up to a day and as
one day's batch; `simulate_cuts` writes several of those from one simulation. See docs/simulator.md.
"""

from features.sources.simulator.days import simulate_cuts, simulate_day, simulate_until
from features.sources.simulator.engine import SimulationResult, simulate
from features.sources.simulator.offers import true_accept_prob, true_anyway_prob
from features.sources.simulator.params import DEFAULT_PARAMS, SimulatorParams

__all__ = [
    "DEFAULT_PARAMS",
    "SimulationResult",
    "SimulatorParams",
    "simulate",
    "simulate_cuts",
    "simulate_day",
    "simulate_until",
    "true_accept_prob",
    "true_anyway_prob",
]
