"""The uplift model: the effect of an outreach action on the customer's next purchase.

Every learner `training.uplift` compares (T-, S-, X- and DR-learner) ends as a weighted sum of
LightGBM regression boosters, so one artefact serves them all:

    τ(x, a) = Σ_k w_k(a) · f_k(x, a[, treated = t_k])

- T-learner: f₁ − f₀, outcome models of the sent and the held-out rows;
- S-learner: f(x, a, treated=1) − f(x, a, treated=0), one outcome model with the treatment
  as an input;
- X-learner: e(a)·τ₀ + (1 − e(a))·τ₁, effect models of the imputed effects of the held-out
  and the sent rows, weighted by the action's treated share e(a);
- DR-learner: one effect model of the doubly robust pseudo-outcomes;
- R-learner: one effect model fitted to Robinson's residuals;
- action means: each action's average effect alone (no booster).

The effect models (X, DR, R) start from each action's average effect (`offsets`) and learn
only how customers differ from it: with few held-out rows, trees shrunk towards zero would
otherwise pull every action's effect towards zero and lose the order of the actions, the
most reliable thing the holdout measures.

Regression boosters on 0/1 outcomes predict probabilities directly, so the effect is a sum
of trees and its SHAP contributions are exact: the same weighted sum of each booster's
TreeSHAP values (`contributions`). Each prediction also gets an interval: the observed
uplift, with its interval, of the validation rows whose predicted uplift fell in the same
bin (`UpliftIntervals`): it says how far the group of such predictions was right, which a
single customer's effect, never observed, cannot say.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd

from models.served.encoding import FeatureLayout
from models.served.reasons import Reason, contributions, reason_codes

META_FILE = "uplift_model.json"
ACTION = "action"
TREATED = "treated"
# Weights of a term: a constant, or the action's treated share e(a) or its complement.
WEIGHTS = ("+1", "-1", "e", "1-e")


@dataclass(frozen=True)
class Term:
    """One booster of the sum and how it is weighted.

    Attributes:
        booster: A LightGBM regression booster.
        best_iteration: Trees used.
        weight: One of `WEIGHTS`.
        treated: The value of the `treated` input the booster reads (S-learner), or None.
    """

    booster: lgb.Booster
    best_iteration: int
    weight: str
    treated: float | None = None


@dataclass(frozen=True)
class UpliftIntervals:
    """Predicted uplift bins and the observed uplift of the validation rows in each.

    A prediction's interval is centred on the prediction, as wide as the interval of the
    observed uplift among the validation rows of its bin: how precisely the randomised
    holdout measures the effect of a group of such predictions. The bin's observed uplift
    says how far such predictions were right (`observed_of`).

    Attributes:
        edges: Inner bin edges of predicted uplift, ascending (len = bins − 1).
        low, high: The interval of the observed uplift per bin.
        observed: The observed uplift per bin.
        level: The intervals' level.
    """

    edges: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    observed: tuple[float, ...]
    level: float

    def _bins(self, uplift: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.asarray(self.edges), uplift, side="right")

    def of(self, uplift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each prediction's interval: the prediction ± half its bin's interval width (NaN
        where the prediction is NaN, or where the bin had rows of one arm only)."""
        uplift = np.asarray(uplift, dtype=np.float64)
        bins = self._bins(uplift)
        half = (np.asarray(self.high) - np.asarray(self.low))[bins] / 2.0
        return uplift - half, uplift + half

    def observed_of(self, uplift: np.ndarray) -> np.ndarray:
        """The observed uplift of each prediction's bin on the validation rows."""
        uplift = np.asarray(uplift, dtype=np.float64)
        observed = np.asarray(self.observed)[self._bins(uplift)]
        return np.where(np.isfinite(uplift), observed, np.nan)

    def to_dict(self) -> dict[str, object]:
        return {
            "edges": list(self.edges),
            "low": list(self.low),
            "high": list(self.high),
            "observed": list(self.observed),
            "level": self.level,
        }

    @staticmethod
    def from_dict(data: Mapping) -> UpliftIntervals:
        return UpliftIntervals(
            tuple(data["edges"]),
            tuple(data["low"]),
            tuple(data["high"]),
            tuple(data["observed"]),
            float(data["level"]),
        )


@dataclass
class UpliftModel:
    """Predicted effect of each row's action on its customer's 90-day repurchase.

    Attributes:
        name: The model's registry name.
        learner: Which learner built it ("t_learner", …).
        terms: The boosters of the sum.
        layout: Input columns (the customer's features and `action`; `treated` too for an
            S-learner, set by each term, never read from the input).
        actions: Actions whose effect was learned; any other action's uplift is NaN.
        treated_share: Action → share of its logged rows that were sent (X-learner weights).
        intervals: Intervals of predicted uplift (None: NaN intervals).
        words: Feature → description, for reason codes.
        offsets: Action → a constant added to its uplift (the action's average effect,
            which the boosters then only correct per customer).
    """

    name: str
    learner: str
    terms: tuple[Term, ...]
    layout: FeatureLayout
    actions: tuple[str, ...]
    treated_share: dict[str, float]
    intervals: UpliftIntervals | None = None
    words: dict[str, str] = field(default_factory=dict)
    offsets: dict[str, float] = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        """Input columns the model reads from a row (the treatment is set, not read)."""
        return [f for f in self.layout.features if f != TREATED]

    def _weights(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        e = pd.Series(actions, dtype=object).map(self.treated_share).astype(np.float64)
        e = e.to_numpy()
        ones = np.ones(len(actions))
        return {"+1": ones, "-1": -ones, "e": e, "1-e": 1.0 - e}

    def _matrices(self, data: pd.DataFrame) -> list[np.ndarray]:
        """One input matrix per term (terms reading `treated` get it set)."""
        base = None
        out = []
        cache: dict[float | None, np.ndarray] = {}
        for term in self.terms:
            if term.treated not in cache:
                if TREATED in self.layout.features:
                    frame = data.assign(**{TREATED: 0.0 if term.treated is None else term.treated})
                    cache[term.treated] = self.layout.matrix(frame)
                else:
                    base = base if base is not None else self.layout.matrix(data)
                    cache[term.treated] = base
            out.append(cache[term.treated])
        return out

    def _known(self, data: pd.DataFrame) -> np.ndarray:
        return data[ACTION].isin(self.actions).to_numpy()

    def _offset(self, data: pd.DataFrame) -> np.ndarray:
        if not self.offsets:
            return np.zeros(len(data))
        offset = pd.Series(data[ACTION].to_numpy(dtype=object)).map(self.offsets)
        return offset.astype(np.float64).fillna(0.0).to_numpy()

    def predict(self, data: pd.DataFrame) -> np.ndarray:
        """The uplift of each row's action: P(order within 90 days | sent) − P(… | held
        out); NaN for an action the model did not learn."""
        if not len(data):
            return np.zeros(0)
        weights = self._weights(data[ACTION].to_numpy(dtype=object))
        total = self._offset(data)
        for term, matrix in zip(self.terms, self._matrices(data), strict=True):
            f = term.booster.predict(matrix, num_iteration=term.best_iteration)
            total += weights[term.weight] * f
        return np.where(self._known(data), total, np.nan)

    def interval(self, uplift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Low and high ends of each prediction's interval."""
        if self.intervals is None:
            nan = np.full(len(uplift), np.nan)
            return nan, nan.copy()
        return self.intervals.of(uplift)

    def contributions(self, data: pd.DataFrame) -> pd.DataFrame:
        """SHAP contributions to the predicted uplift, per row and feature, plus `bias`
        (they sum to `predict`)."""
        weights = self._weights(data[ACTION].to_numpy(dtype=object))
        columns = [*self.layout.features, "bias"]
        total = pd.DataFrame(0.0, index=data.index, columns=columns)
        for term in self.terms:
            frame = data
            if TREATED in self.layout.features:
                frame = data.assign(**{TREATED: 0.0 if term.treated is None else term.treated})
            part = contributions(term.booster, self.layout, frame, term.best_iteration)
            total += part.mul(weights[term.weight], axis=0)
        total["bias"] += self._offset(data)
        if TREATED in total.columns:
            # The S-learner's `treated` input is the treatment itself, not a trait of the
            # customer: its share of the difference is part of the base effect.
            total["bias"] += total.pop(TREATED)
        return total

    def reasons(
        self,
        data: pd.DataFrame,
        k: int = 3,
        direction: str = "up",
        withheld: Collection[str] = (),
    ) -> list[list[Reason]]:
        """Top-k reasons per row, in words ("up": what makes the action work better;
        `withheld` features are named without their value)."""
        contrib = self.contributions(data)
        return reason_codes(contrib, data, self.words, k=k, direction=direction, withheld=withheld)

    def input_frame(self, data: pd.DataFrame) -> pd.DataFrame:
        """The input columns as the signature declares them."""
        return self.layout.input_frame(data.assign(**{TREATED: 0.0})).drop(
            columns=[TREATED], errors="ignore"
        )

    def signature_output(self, data: pd.DataFrame) -> np.ndarray:
        """What the registered pyfunc returns for `data`."""
        return self.predict(data)

    def save(self, folder: Path) -> Path:
        """Write the model as plain files: one LightGBM text file per term and one JSON."""
        folder.mkdir(parents=True, exist_ok=True)
        terms = []
        for i, term in enumerate(self.terms):
            path = f"booster_{i}.txt"
            term.booster.save_model(folder / path, num_iteration=term.best_iteration)
            terms.append(
                {
                    "file": path,
                    "best_iteration": term.best_iteration,
                    "weight": term.weight,
                    "treated": term.treated,
                }
            )
        meta = {
            "name": self.name,
            "learner": self.learner,
            "terms": terms,
            "layout": self.layout.to_dict(),
            "actions": list(self.actions),
            "treated_share": self.treated_share,
            "intervals": self.intervals.to_dict() if self.intervals else None,
            "words": self.words,
            "offsets": self.offsets,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2))
        return folder

    @staticmethod
    def load(folder: Path) -> UpliftModel:
        """Read a model written by `save`."""
        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        terms = tuple(
            Term(
                lgb.Booster(model_file=str(folder / t["file"])),
                int(t["best_iteration"]),
                t["weight"],
                t["treated"],
            )
            for t in meta["terms"]
        )
        intervals = meta.get("intervals")
        return UpliftModel(
            name=meta["name"],
            learner=meta["learner"],
            terms=terms,
            layout=FeatureLayout.from_dict(meta["layout"]),
            actions=tuple(meta["actions"]),
            treated_share={k: float(v) for k, v in meta["treated_share"].items()},
            intervals=UpliftIntervals.from_dict(intervals) if intervals else None,
            words=meta.get("words", {}),
            offsets={k: float(v) for k, v in meta.get("offsets", {}).items()},
        )


def best_actions(
    model: UpliftModel, rows: pd.DataFrame, actions: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's action of highest predicted uplift among `actions` (None where no
    action's effect is known) and that uplift."""
    learned = [a for a in actions if a in model.actions]
    n = len(rows)
    if not learned or not n:
        return np.full(n, None, dtype=object), np.full(n, np.nan)
    stacked = pd.concat([rows.assign(**{ACTION: a}) for a in learned], ignore_index=True)
    uplift = model.predict(stacked).reshape(len(learned), n)
    best = np.nanargmax(np.where(np.isnan(uplift), -np.inf, uplift), axis=0)
    value = uplift[best, np.arange(n)]
    chosen = np.asarray(learned, dtype=object)[best]
    return np.where(np.isfinite(value), chosen, None), value


# The file MLflow runs to build `UpliftPyfunc` when it loads a logged uplift model.
PYFUNC_CODE = Path(__file__).with_name("pyfunc_uplift.py")


class UpliftPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper of an `UpliftModel`: rows (with `action`) in, uplift out."""

    def load_context(self, context) -> None:
        """Load the boosters from the logged artifacts."""
        self.model = UpliftModel.load(Path(context.artifacts["model_dir"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        """The predicted uplift of each row's action."""
        return self.model.predict(model_input)
