"""The binary classifiers trained on a Dask cluster beside one machine, on the same business.

Targets (scale-out): the Dask path at most 20% slower than one machine on this 2-core
machine, and its test AUC within 0.005 of one machine's model on the same test rows.

The business is the seeded simulation built into features the production way
(`benchmarks.train_scale.prepared`). A local cluster of two worker processes of one thread
each is started; delay risk and churn (the models that `lightgbm.dask` fits) are then each
trained twice through `training.trainers.train_model` in a fresh process: without
`AFTERSALE_DASK_ADDRESS` (one machine) and with it (the cluster). Each process's peak
resident memory is its own (`train_scale.peak_rss_gib`); the workers are restarted before
each Dask run, so their peak is that run's.

`python -m benchmarks train_dask --customers 100000` writes `<out>/train_dask-<N>.json`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from benchmarks.train_scale import measured, peak_rss_gib, prepared

MODELS = ("delay_risk", "churn")
MAX_SLOWDOWN = 1.2
MAX_AUC_GAP = 0.005


def compared(single: dict, cluster: dict) -> dict:
    """One model's two runs against the targets: the Dask run's time over one machine's,
    the AUC gap (one machine's minus the cluster's; positive: the cluster's is lower), and
    each target's verdict (missed where either run failed)."""
    if "failed" in single or "failed" in cluster:
        return {"model": single["model"], "slowdown": None, "auc_gap": None,
                "time_target": "missed", "auc_target": "missed"}  # fmt: skip
    slowdown = cluster["wall_seconds"] / single["wall_seconds"]
    gap = single["value"] - cluster["value"]
    return {
        "model": single["model"],
        "slowdown": slowdown,
        "auc_gap": gap,
        "time_target": "met" if slowdown <= MAX_SLOWDOWN else "missed",
        "auc_target": "met" if abs(gap) <= MAX_AUC_GAP else "missed",
    }


def bench_train_dask(customers: int, out: Path, models: tuple[str, ...] = MODELS) -> dict:
    """Train each model on one machine and on a two-worker local cluster; print and write
    the figures against the targets."""
    from distributed import Client, LocalCluster

    print(f"\n## train_dask --customers {customers:,} (two workers of one thread)")
    data = prepared(customers, out)
    folder = data.parent / "figures-dask"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        for name in models:
            single = measured(data, name, folder)
            client.restart()
            on_cluster = measured(
                data, name, folder, {"AFTERSALE_DASK_ADDRESS": cluster.scheduler_address}
            )
            workers = client.run(peak_rss_gib)
            on_cluster["workers_peak_rss_gib"] = max(workers.values(), default=0.0)
            rows.append({"single": single, "dask": on_cluster, **compared(single, on_cluster)})
    print(
        f"  {'model':<12} {'AUC one':>9} {'AUC dask':>9} {'gap':>8} {'s one':>7} "
        f"{'s dask':>7} {'ratio':>6} {'GiB one':>8} {'GiB dask':>9} {'GiB worker':>11}"
    )
    for row in rows:
        single, cluster = row["single"], row["dask"]
        if row["slowdown"] is None:
            print(f"  {row['model']:<12} failed: one machine {single}, dask {cluster}")
            continue
        print(
            f"  {row['model']:<12} {single['value']:>9.4f} {cluster['value']:>9.4f} "
            f"{row['auc_gap']:>8.4f} {single['wall_seconds']:>7.1f} "
            f"{cluster['wall_seconds']:>7.1f} {row['slowdown']:>6.2f} "
            f"{single['peak_rss_gib']:>8.2f} {cluster['peak_rss_gib']:>9.2f} "
            f"{cluster['workers_peak_rss_gib']:>11.2f}"
        )
    for row in rows:
        print(
            f"  {row['model']}: at most {MAX_SLOWDOWN:.0%} of one machine's time: "
            f"{row['time_target']}; AUC within {MAX_AUC_GAP}: {row['auc_target']}"
        )
    report = {"customers": customers, "models": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"train_dask-{customers}.json").write_text(json.dumps(report, indent=2))
    return report
