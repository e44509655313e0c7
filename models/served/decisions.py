"""Rows that every tree of a LightGBM model treats alike, and a bounded memo of their answers.

A tree's output for a row, and its TreeSHAP contributions, depend on the row only through
the decision it takes at each split: TreeSHAP walks both sides of every split, weighing the
side the row does not take by the training rows' cover, so every split of every tree counts,
not only those on the row's path. Two rows that take the same side at every split get the
same prediction and the same contributions, to the last bit.

`DecisionKey` gives a row a key that is equal for two rows only if they take the same side at
every split (it may tell apart rows that are in fact treated alike, never the reverse):
- each numerical split `value <= threshold` as one bit, for every distinct threshold of the
  feature in the model;
- a numerical value that is missing or about zero (LightGBM sends NaN, and under its "zero"
  missing type values within 1e-35 of zero, to a split's default side) as its own bytes;
- a categorical feature's encoded value as its bytes, and so the value of a feature that a
  linear leaf (`linear_tree`) multiplies.
Features no split uses are left out: a row's age in seconds, say, moves the key only when it
crosses a threshold, which is what makes the memo worth having on the request path. A
parcel's tracking page refreshed, a customer scored again by the next scheduler's pull, hit
it until the row's features cross a split or change.

`DecisionMemo` keeps the answers of the latest rows by key, least recently used first out.
LightGBM has no such memo; its predictor recomputes every row. Rows computed under
`answering_ahead` (the service filling its memos with what is likely asked next) are counted
apart from the asks' hits and misses.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import lightgbm as lgb
import numpy as np

# Values this close to zero are kept whole in the key: LightGBM's "zero" missing type tests
# |value| <= 1e-35 (a float), and any bound above it keeps such values apart from the rest.
TINY = 1e-30

_ahead = threading.local()


@contextmanager
def answering_ahead() -> Iterator[None]:
    """Within it, on this thread, the rows a memo computes count as answered ahead
    (`DecisionMemo.ahead`), not as misses, and rows it finds are not counted as hits: the
    work is moved before the asks, it is not an ask."""
    _ahead.on = True
    try:
        yield
    finally:
        _ahead.on = False


class DecisionKey:
    """The key of a row's decisions at every split of a booster's first `num_iteration`
    trees (all where None). Rows are encoded as the booster is fed: one float per feature."""

    def __init__(self, booster: lgb.Booster, num_iteration: int | None = None) -> None:
        self._splits([(booster, num_iteration)])

    @classmethod
    def of_boosters(cls, boosters: Iterable[tuple[lgb.Booster, int | None]]) -> DecisionKey:
        """The key of a row's decisions in several boosters fed the same rows, each with
        its number of trees: rows with one key get the same output from each."""
        key = cls.__new__(cls)
        key._splits(boosters)
        return key

    def _splits(self, boosters: Iterable[tuple[lgb.Booster, int | None]]) -> None:
        numeric: dict[int, set[float]] = {}
        whole: set[int] = set()  # categorical splits, and the inputs of linear leaves
        for booster, num_iteration in boosters:
            for tree in booster.dump_model(num_iteration=num_iteration or -1)["tree_info"]:
                stack = [tree["tree_structure"]]
                while stack:
                    node = stack.pop()
                    if "split_feature" not in node:
                        whole.update(int(f) for f in node.get("leaf_features", ()))
                        continue
                    feature = int(node["split_feature"])
                    if node["decision_type"] == "==":
                        whole.add(feature)
                    else:
                        numeric.setdefault(feature, set()).add(float(node["threshold"]))
                    stack += [node["left_child"], node["right_child"]]
        order = sorted(numeric)
        self._split_features = np.array([f for f in order for _ in numeric[f]], dtype=np.intp)
        self._thresholds = np.array(
            [t for f in order for t in sorted(numeric[f])], dtype=np.float64
        )
        self._numeric = np.array(order, dtype=np.intp)
        self._whole = np.array(sorted(whole), dtype=np.intp)

    def keys(self, x: np.ndarray) -> list[bytes]:
        """One key per row of the model input matrix `x` (rows × features, float64)."""
        x = np.asarray(x, dtype=np.float64)
        sides = np.packbits(x[:, self._split_features] <= self._thresholds, axis=1)
        numbers = x[:, self._numeric]
        # NaN fails the comparison too: missing and tiny values are kept, the rest are 1.
        kept = np.where(np.abs(numbers) >= TINY, 1.0, numbers)
        values = x[:, self._whole]
        return [
            hashlib.blake2b(
                sides[i].tobytes() + kept[i].tobytes() + values[i].tobytes(),
                digest_size=16,
            ).digest()
            for i in range(len(x))
        ]


class DecisionMemo:
    """Answers of rows by their `DecisionKey`: at most `size` rows, the least recently used
    dropped first; `size` 0 keeps nothing. Safe to share between threads."""

    def __init__(self, key: DecisionKey, size: int) -> None:
        self.key = key
        self.size = size
        self._answers: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.ahead = 0

    def __len__(self) -> int:
        return len(self._answers)

    def rows(self, x: np.ndarray, compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """`compute(x)` (one answer row per input row), with each row's answer taken from the
        memo where a row with the same key was answered before; `compute` runs once, on
        the other rows."""
        if self.size <= 0 or len(x) == 0:
            return compute(x)
        keys = self.key.keys(x)
        with self._lock:
            answers = [self._answers.get(key) for key in keys]
            for key, found in zip(keys, answers, strict=True):
                if found is not None:
                    self._answers.move_to_end(key)
            missing = [i for i, found in enumerate(answers) if found is None]
            if getattr(_ahead, "on", False):
                self.ahead += len(missing)
            else:
                self.hits += len(keys) - len(missing)
                self.misses += len(missing)
        if not missing:
            return np.stack(answers)
        everything = len(missing) == len(keys)
        computed = compute(x if everything else x[missing])
        with self._lock:
            for row, i in enumerate(missing):
                # A copy: the caller may change what it is handed.
                answers[i] = value = computed[row].copy()
                self._answers[keys[i]] = value
                self._answers.move_to_end(keys[i])
            while len(self._answers) > self.size:
                self._answers.popitem(last=False)
        return computed if everything else np.stack(answers)
