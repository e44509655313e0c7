"""The service's contract under generated requests: schemathesis against a served process.

Schemathesis reads the OpenAPI document the service serves (`/docs.json`) and generates
requests for every route, valid ones and ones that break the schema, each sent with a key of
every scope. A failure is any check of schemathesis's that does not hold: a 5xx, a status or
body the document does not declare, a valid request refused, an invalid one accepted.
`make test` runs a few examples per route (`tests/serving/test_contract_fuzz.py`); this
benchmark runs many more on the serving benchmark's data folder and prints the counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

EXAMPLES_PER_ROUTE = 300


@dataclass
class ContractRun:
    """What one run sent and what failed: per route and kind of request, the first failure
    hypothesis found (shrunk to its smallest example)."""

    requests: int = 0
    operations: int = 0
    failures: list[str] = field(default_factory=list)


def fuzz(url: str, key: str, examples: int, seed: int = 0) -> ContractRun:
    """Generate `examples` valid and `examples` invalid requests per route and check each
    answer against the served document.

    Args:
        url: The service's base URL.
        key: An API key with every scope.
        examples: Requests per route and kind (valid, invalid).
        seed: Hypothesis's seed: the same seed sends the same requests.
    """
    import hypothesis
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode
    from schemathesis.core.failures import FailureGroup

    schema = schemathesis.openapi.from_url(f"{url}/docs.json")
    # The key in both headers the document declares, so no generated value stands in for it.
    headers = {"Authorization": f"Bearer {key}", "X-API-Key": key}
    run = ContractRun()
    for result in schema.get_all_operations():
        operation = result.ok()
        run.operations += 1
        # A route without a body or parameters has no invalid request to make.
        takes_input = len(operation.body) > 0 or any(True for _ in operation.iter_parameters())
        modes = [GenerationMode.POSITIVE, *([GenerationMode.NEGATIVE] if takes_input else [])]
        for mode in modes:

            @hypothesis.seed(seed)
            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case) -> None:
                run.requests += 1
                case.call_and_validate(base_url=url, headers=headers, timeout=30)

            try:
                check()
            # A failed check (several at once come as a group), reported with its request.
            except (Exception, FailureGroup) as error:
                run.failures.append(f"{operation.label} ({mode.value}): {error}")
    return run


def bench_contract(customers: int, out: Path) -> None:
    """Many generated requests per route against a served process; counts and failures."""

    from benchmarks.serving import KEY, Server, served_data, served_env

    print(f"\n## contract under generated requests ({EXAMPLES_PER_ROUTE} per route and kind)")
    env, _ = served_env(served_data(out))
    with Server("serving.service:Aftersale", "aftersale", env) as served:
        started = time.perf_counter()
        run = fuzz(served.url, KEY, EXAMPLES_PER_ROUTE)
        seconds = time.perf_counter() - started
    print(
        f"  {run.operations} routes, {run.requests:,} requests in {seconds:.0f} s; "
        f"{len(run.failures)} failing (route, kind)"
    )
    for failure in run.failures:
        print(f"  FAILED {failure}")
