"""Run the benchmarks: `python -m benchmarks [NAME ...] [--customers N] [--soak-seconds S]`.

Each benchmark prints its figures and, where one exists, the ratio to a baseline measured in
the same run. Outputs go under benchmarks/out/ (ignored by git).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aftersale.console import quiet_prefect
from benchmarks import (
    contract,
    delivery,
    features,
    foundation,
    growth,
    night,
    serving,
    shock,
    soak,
    text_reasons,
    train_dask,
    train_scale,
    training,
    uplift,
)

BENCHMARKS = {
    "simulate": foundation.bench_simulate,
    "validate": foundation.bench_validate,
    "features": features.bench_features,
    "materialize": features.bench_materialize,
    "materialize_redis": features.bench_materialize_redis,
    "online_read": features.bench_online_read,
    "training": training.bench_training,
    "train_scale": train_scale.bench_train_scale,
    "train_dask": train_dask.bench_train_dask,
    "olist": training.bench_olist,
    "delivery": delivery.bench_delivery,
    "uplift": uplift.bench_uplift,
    "serving": serving.bench_serving,
    "score_batch": serving.bench_score_batch,
    "contract": contract.bench_contract,
    "shock": shock.bench_shock,
    "soak": soak.bench_soak,
    "night": night.bench_night,
    "text_reasons": text_reasons.bench_text_reasons,
    "growth": growth.bench_growth,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    parser.add_argument(
        "--soak-seconds",
        type=float,
        default=soak.SOAK_SECONDS,
        help="how long the soak holds its load (default %(default).0f)",
    )
    parser.add_argument(
        "--champions-from",
        type=Path,
        default=None,
        help="night: start the registry from a copy of this data folder's (say "
        "benchmarks/out/night-100000/data), so the first night trains nothing",
    )
    parser.add_argument(
        "--retraining-night",
        action="store_true",
        help="night: with --champions-from, also run the night that retrains every model",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; choose from {sorted(BENCHMARKS)}")
    logging.basicConfig(level=logging.WARNING)
    quiet_prefect()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    # Options that only one benchmark takes, by its name.
    options = {
        "soak": {"seconds": args.soak_seconds},
        "night": {
            "champions_from": args.champions_from,
            "retraining_night": args.retraining_night,
        },
    }
    for name in args.names or list(BENCHMARKS):
        BENCHMARKS[name](customers=args.customers, out=args.out, **options.get(name, {}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
