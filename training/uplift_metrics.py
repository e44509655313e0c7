"""How well a ranking targets an effect: Qini and uplift curves, their areas, the uplift at a
capacity, and bootstrap intervals from the randomised holdout.

Rows are ranked by a score, highest first. With T the treatment (sent) and Y the outcome,
over the top k rows (weights w: 1/e for a treated row and 1/(1 − e) for a held-out one, e
its action's treated share, so actions held out at different rates count alike):

    R_T(k) = Σ w·T·Y,  R_C(k) = Σ w·(1 − T)·Y,  N_T(k) = Σ w·T,  N_C(k) = Σ w·(1 − T)

- Qini curve (Radcliffe 2007): Q(k) = R_T(k) − R_C(k)·N_T(k)/N_C(k), scaled by n/N_T(n) to the
  whole population: the extra outcomes had the top k been treated (0 while N_C(k) is 0).
- Qini coefficient: the mean over k = 1..n of (Q(k) − (k/n)·Q(n)) / n, the area between the
  Qini curve and random targeting's straight line, per row: 0 for a random ranking, larger
  the better the ranking puts the movable first.
- Uplift curve: U(k) = (R_T(k)/N_T(k) − R_C(k)/N_C(k))·k; AUUC = mean over k of U(k)/n.
- Uplift at a capacity: R_T/N_T − R_C/N_C among the top share of rows.

Hand-written because the libraries that have these (causalml, scikit-uplift) disagree on
the scaling and neither takes per-arm weights and a bootstrap in one pass; the definitions
above are the standard ones and `tests/training/test_uplift_metrics.py` holds them to a
hand-computed example.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Curves:
    """Cumulative sums over the ranked rows (index k − 1 for the top k)."""

    n: int
    r_t: np.ndarray
    r_c: np.ndarray
    n_t: np.ndarray
    n_c: np.ndarray

    @property
    def qini(self) -> np.ndarray:
        """Q(k) for k = 1..n, scaled to the population."""
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(self.n_c > 0, self.r_t - self.r_c * self.n_t / self.n_c, 0.0)
        scale = self.n / self.n_t[-1] if self.n and self.n_t[-1] > 0 else np.nan
        return q * scale

    @property
    def uplift(self) -> np.ndarray:
        """U(k) for k = 1..n."""
        k = np.arange(1, self.n + 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(
                (self.n_t > 0) & (self.n_c > 0), self.r_t / self.n_t - self.r_c / self.n_c, 0.0
            )
        return u * k


def arm_weights(treated: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
    """1/e for a treated row and 1/(1 − e) for a held-out one, e the treated share of its
    action among the rows (one share for all rows without `actions`)."""
    treated = np.asarray(treated, dtype=bool)
    groups = np.zeros(len(treated), dtype=np.int64)
    if actions is not None:
        groups = pd.factorize(pd.Series(actions, dtype=object))[0]
    share = pd.Series(treated.astype(np.float64)).groupby(groups).transform("mean").to_numpy()
    with np.errstate(divide="ignore"):
        return np.where(treated, 1.0 / share, 1.0 / (1.0 - share))


def curves(score: np.ndarray, y: np.ndarray, treated: np.ndarray, weight=None) -> Curves:
    """Cumulative sums of the rows ranked by `score`, highest first (NaN scores last, tied
    as one run; ties spread evenly, `_Runs.tied`)."""
    y = np.asarray(y, dtype=np.float64)
    t = np.asarray(treated, dtype=bool)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64)
    return Ranking.of(score, y, t, w).curves()


# Above this share of rows tied with another, a resample's runs are found afresh from its
# keys (`Ranking.resampled`), which then costs less than spreading each run found before.
MOSTLY_TIED = 0.5


@dataclass(frozen=True)
class Ranking:
    """Rows ranked by one score, highest first, with each row's four summands (w·T·Y,
    w·(1 − T)·Y, w·T, w·(1 − T)) in that order: what every resample of the rows reuses.

    A resample with replacement ranks its rows as the full rows are ranked, each row
    repeated as often as it was drawn (its copies tie), so `resampled` needs no sort.
    """

    order: np.ndarray
    key: np.ndarray
    summands: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    # Each ranked row's run of equal scores (missing scores tie with each other); None
    # where none tie. `resampled` spreads these runs unless most rows tie.
    run: np.ndarray | None = None
    mostly_tied: bool = False

    @classmethod
    def of(cls, score: np.ndarray, y: np.ndarray, t: np.ndarray, w: np.ndarray) -> Ranking:
        """The rows ranked by `score` (NaN last), from their outcomes, treatments and
        weights."""
        key = -np.nan_to_num(np.asarray(score, dtype=np.float64), nan=-np.inf)
        order = np.argsort(key, kind="stable")
        y, t, w = y[order], t[order], w[order]
        ranked = key[order]
        run = np.cumsum(np.append(True, ranked[1:] != ranked[:-1])) - 1
        size = np.bincount(run)
        tied = float((size[size > 1]).sum()) / max(len(ranked), 1)
        summands = (w * t * y, w * ~t * y, w * t, w * ~t)
        if tied == 0:
            return cls(order, ranked, summands)
        return cls(order, ranked, summands, run, mostly_tied=tied > MOSTLY_TIED)

    def curves(self) -> Curves:
        """The curves of all the rows."""
        return _ranked_curves(self.summands, self.key)

    def resampled(self, counts: np.ndarray) -> Curves:
        """The curves of a resample that holds row i `counts[i]` times: those of
        `curves(score[rows], ...)` on the resampled rows, up to the order in which tied
        rows' summands are added (the last bits of a float)."""
        times = counts[self.order]
        if self.mostly_tied:
            return _ranked_curves(
                tuple(np.repeat(summand, times) for summand in self.summands),
                np.repeat(self.key, times),
            )
        # A row's copies tie only with each other, and adding their equal summands one at a
        # time is already the even spread over their run: only runs of rows that tied before
        # the resample (drawn from two rows or more) are spread (continuous scores at 545,000
        # rows: 45 ms a resample against 75 ms finding every run of the resample's keys).
        r_t, r_c, n_t, n_c = (np.cumsum(np.repeat(s, times)) for s in self.summands)
        if self.run is not None:
            _spread_ties((r_t, r_c, n_t, n_c), self.run, times)
        return Curves(n=int(times.sum()), r_t=r_t, r_c=r_c, n_t=n_t, n_c=n_c)


def _spread_ties(cumulative: tuple[np.ndarray, ...], run: np.ndarray, times: np.ndarray) -> None:
    """`_Runs.tied` in place on the cumulative sums of a resample, for the runs of tied
    rows that it drew from two rows or more (`run`: each ranked row's run; `times`: how
    often each ranked row was drawn)."""
    drawn = np.bincount(run, weights=times).astype(np.int64)
    spread = np.flatnonzero(np.bincount(run, weights=times > 0) > 1)
    if len(spread) == 0:
        return
    end = np.cumsum(drawn) - 1
    # Each position of the runs spread, with its run's end and the end of the one before.
    lengths = drawn[spread]
    before_run = np.repeat(end[spread] - lengths, lengths)
    last = np.repeat(end[spread], lengths)
    offset = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    position = before_run + 1 + offset
    share = (position - before_run) / (last - before_run)
    for values in cumulative:
        before = np.where(before_run >= 0, values[np.maximum(before_run, 0)], 0.0)
        values[position] = before + share * (values[last] - before)


def _ranked_curves(summands: tuple[np.ndarray, ...], key: np.ndarray) -> Curves:
    """Curves from the ranked rows' summands and sort keys."""
    runs = _Runs.of(key)
    r_t, r_c, n_t, n_c = (runs.tied(np.cumsum(summand)) for summand in summands)
    return Curves(n=len(key), r_t=r_t, r_c=r_c, n_t=n_t, n_c=n_c)


@dataclass(frozen=True)
class _Runs:
    """The runs of equal keys of ranked rows: each position's run end, the end of the run
    before (−1 for the first), and its share of the way through its run."""

    end: np.ndarray
    start: np.ndarray
    share: np.ndarray

    @classmethod
    def of(cls, key: np.ndarray) -> _Runs:
        n = len(key)
        # Last position of each run of equal keys, and of the run before.
        ends = np.flatnonzero(np.append(key[1:] != key[:-1], True))
        lengths = np.diff(ends, prepend=-1)
        end = np.repeat(ends, lengths)
        start = np.repeat(ends - lengths, lengths)
        return cls(end, start, (np.arange(n) - start) / (end - start))

    def tied(self, cumulative: np.ndarray) -> np.ndarray:
        """Cumulative sums with tied keys spread evenly over their run: the expectation
        over every order of the ties, so no input order favours one arm."""
        if len(cumulative) == 0:
            return cumulative
        before = np.where(self.start >= 0, cumulative[np.maximum(self.start, 0)], 0.0)
        return before + self.share * (cumulative[self.end] - before)


def qini_coefficient(c: Curves) -> float:
    """The area between the Qini curve and random targeting's line, per row."""
    if c.n == 0:
        return float("nan")
    q = c.qini
    k = np.arange(1, c.n + 1)
    return float(np.mean(q - k / c.n * q[-1]) / c.n)


def auuc(c: Curves) -> float:
    """The area under the uplift curve, per row."""
    return float(np.mean(c.uplift) / c.n) if c.n else float("nan")


def uplift_at(c: Curves, share: float) -> float:
    """The observed uplift among the top `share` of rows."""
    if c.n == 0:
        return float("nan")
    # Rounded first: 0.07 × 100 is 7.000000000000001 in floating point, still 7 rows.
    k = max(int(np.ceil(round(share * c.n, 9))), 1) - 1
    if c.n_t[k] <= 0 or c.n_c[k] <= 0:
        return float("nan")
    return float(c.r_t[k] / c.n_t[k] - c.r_c[k] / c.n_c[k])


def uplift_metrics(
    score: np.ndarray, y: np.ndarray, treated: np.ndarray, weight=None, capacity: float = 0.2
) -> dict[str, float]:
    """Qini coefficient, AUUC and the uplift at `capacity` of one ranking."""
    return metrics_of(curves(score, y, treated, weight), capacity)


def metrics_of(c: Curves, capacity: float = 0.2) -> dict[str, float]:
    """Qini coefficient, AUUC and the uplift at `capacity` of one ranking's curves."""
    return {
        "qini": qini_coefficient(c),
        "auuc": auuc(c),
        "uplift_at_capacity": uplift_at(c, capacity),
        "observed_uplift": uplift_at(c, 1.0),
    }


def resample_counts(rng: np.random.Generator, treated: np.ndarray) -> np.ndarray:
    """How often each row is drawn in one bootstrap resample: each arm's rows drawn with
    replacement, as many as the arm has (the treated arm's draws first)."""
    arms = [np.flatnonzero(treated), np.flatnonzero(~treated)]
    rows = np.concatenate([rng.choice(a, size=len(a), replace=True) for a in arms if len(a)])
    return np.bincount(rows, minlength=len(treated))


def bootstrap_intervals(
    scores: dict[str, np.ndarray],
    y: np.ndarray,
    treated: np.ndarray,
    weight=None,
    capacity: float = 0.2,
    resamples: int = 200,
    level: float = 0.9,
    seed: int = 7,
    ratio_to: str | None = None,
) -> pd.DataFrame:
    """Each ranking's metrics with percentile intervals from resampling the rows with
    replacement within each arm (the holdout's randomness is what the interval measures).

    Args:
        scores: Ranking name → its score per row.
        y, treated, weight: The rows' outcomes, treatments and weights.
        capacity: Share for the uplift at capacity.
        resamples: Bootstrap resamples.
        level: Interval level.
        seed: Seed of the resampling.
        ratio_to: A ranking whose Qini each other's is divided by within each resample
            (`qini_ratio` rows; e.g. the oracle's).

    Returns:
        One row per (ranking, metric): value, low, high.
    """
    y = np.asarray(y, dtype=np.float64)
    treated = np.asarray(treated, dtype=bool)
    weight = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64)
    ranked = {name: Ranking.of(s, y, treated, weight) for name, s in scores.items()}
    point = {name: metrics_of(r.curves(), capacity) for name, r in ranked.items()}
    rng = np.random.default_rng(seed)
    draws: dict[tuple[str, str], list[float]] = {}
    for _ in range(resamples):
        counts = resample_counts(rng, treated)
        got = {name: metrics_of(r.resampled(counts), capacity) for name, r in ranked.items()}
        for name, metrics in got.items():
            for metric, value in metrics.items():
                draws.setdefault((name, metric), []).append(value)
            if ratio_to is not None and name != ratio_to:
                draws.setdefault((name, "qini_ratio"), []).append(
                    metrics["qini"] / got[ratio_to]["qini"]
                )
    tail = (1.0 - level) / 2.0
    rows = []
    for (name, metric), values in draws.items():
        if metric == "qini_ratio":
            value = point[name]["qini"] / point[ratio_to]["qini"]
        else:
            value = point[name][metric]
        finite = np.asarray(values, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        low, high = np.quantile(finite, [tail, 1.0 - tail]) if len(finite) else (np.nan, np.nan)
        rows.append({"ranking": name, "metric": metric, "value": value, "low": low, "high": high})
    return pd.DataFrame(rows, columns=["ranking", "metric", "value", "low", "high"])


def arm_difference(
    y: np.ndarray, treated: np.ndarray, level: float = 0.9
) -> tuple[float, float, float]:
    """The mean outcome of the treated rows less the held-out rows', with a normal interval
    (Welch's standard error): the average effect of a randomised action on any outcome.

    Returns:
        effect, low, high (NaN when an arm has fewer than two rows).
    """
    from scipy.stats import norm

    y = np.asarray(y, dtype=np.float64)
    treated = np.asarray(treated, dtype=bool)
    sent, held = y[treated], y[~treated]
    if len(sent) < 2 or len(held) < 2:
        return np.nan, np.nan, np.nan
    effect = float(sent.mean() - held.mean())
    se = float(np.sqrt(sent.var(ddof=1) / len(sent) + held.var(ddof=1) / len(held)))
    z = float(norm.ppf(0.5 + level / 2.0))
    return effect, effect - z * se, effect + z * se
