"""One row through a LightGBM booster without `Booster.predict`'s set-up at every call.

`Booster.predict` builds a predictor, checks and converts its input and sizes its output at
each call: about 40-50 µs, as long as a whole prediction of the window's boosters and a
tenth of a request's TreeSHAP. A request on the serving path scores one row. LightGBM's C API
has a path made for that (`LGBM_BoosterPredictForMatSingleRowFastInit`, then
`LGBM_BoosterPredictForMatSingleRowFast` per row): the predictor is set up once and each row
costs a few microseconds beyond the trees themselves. The Python package does not wrap it,
so `RowPredictor` calls it through the package's own loaded library (the version is pinned
in `uv.lock`; `tests/models/test_single_row.py` holds its answers bit-identical to
`Booster.predict`'s). Up to `SMALL_ROWS` rows go through it one by one; more at once go
through `Booster.predict`, which batches them.
"""

from __future__ import annotations

import ctypes
import threading

import lightgbm as lgb
import numpy as np
from lightgbm.basic import _LIB, _safe_call

# LightGBM's C API constants (c_api.h).
_PREDICT_NORMAL = 0
_PREDICT_CONTRIB = 3
_FLOAT64 = 1
# Up to this many rows go through the single-row path one by one; more, through
# `Booster.predict`, which batches them. Measured on the served boosters (binary, 76-200
# trees): a row costs 5-7 µs on the single-row path and `Booster.predict` 19-20 µs for one
# row, 20-26 µs for four, 22-35 µs for eight, so from four rows on the batch is as fast or
# faster (an offer answer's 25 candidates: 34 µs batched, 250 µs one by one). With
# contributions TreeSHAP's own cost dominates and either path takes the same time.
SMALL_ROWS = 3


class RowPredictor:
    """`booster.predict(x, num_iteration=..., pred_contrib=..., num_threads=...)`, with a
    one-row `x` answered through LightGBM's single-row path.

    Safe to share between threads (LightGBM locks its single-row predictor), and to pickle
    (the C-side configuration is made again where it is next used).
    """

    def __init__(
        self,
        booster: lgb.Booster,
        num_iteration: int | None = None,
        contributions: bool = False,
        num_threads: int = 1,
    ) -> None:
        self.booster = booster
        self.num_iteration = booster.best_iteration if num_iteration is None else num_iteration
        self.contributions = contributions
        self.num_threads = num_threads
        self.features = booster.num_feature()
        # One output per model and row (regression, binary): the single-row path below is
        # taken only then; a multiclass booster's rows go through `Booster.predict`.
        self._single = booster.num_model_per_iteration() == 1
        self.width = self.features + 1 if contributions else 1
        self._config: ctypes.c_void_p | None = None
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Predictions of matrix rows `x` (rows × features), shaped as `Booster.predict`'s:
        one value per row, or one row of contributions (features, then bias) per row."""
        x = np.asarray(x)
        if (
            x.ndim != 2
            or not 1 <= len(x) <= SMALL_ROWS
            or x.shape[1] != self.features
            or not self._single
        ):
            return self.booster.predict(
                x,
                num_iteration=self.num_iteration,
                pred_contrib=self.contributions,
                num_threads=self.num_threads,
            )
        rows = np.ascontiguousarray(x, dtype=np.float64)
        out = np.empty((len(rows), self.width), dtype=np.float64)
        config = self._fast_config()
        written = ctypes.c_int64(0)
        for k in range(len(rows)):
            _safe_call(
                _LIB.LGBM_BoosterPredictForMatSingleRowFast(
                    config,
                    rows[k].ctypes.data_as(ctypes.c_void_p),
                    ctypes.byref(written),
                    out[k].ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
                )
            )
            if written.value != self.width:
                raise RuntimeError(
                    f"LightGBM wrote {written.value} values for a row, not {self.width}"
                )
        return out if self.contributions else out[:, 0]

    def _fast_config(self) -> ctypes.c_void_p:
        config = self._config
        if config is not None:
            return config
        with self._lock:
            if self._config is None:
                config = ctypes.c_void_p()
                parameters = f"num_threads={self.num_threads}".encode()
                _safe_call(
                    _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                        self.booster._handle,
                        ctypes.c_int(_PREDICT_CONTRIB if self.contributions else _PREDICT_NORMAL),
                        ctypes.c_int(0),
                        # LightGBM's "all trees" is any number ≤ 0, as in `Booster.predict`.
                        ctypes.c_int(self.num_iteration if self.num_iteration > 0 else -1),
                        ctypes.c_int(_FLOAT64),
                        ctypes.c_int32(self.features),
                        ctypes.c_char_p(parameters),
                        ctypes.byref(config),
                    )
                )
                self._config = config
        return self._config

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_config"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __del__(self) -> None:
        config = getattr(self, "_config", None)
        if config is not None and _LIB is not None:
            # The booster it points into is still referenced by this object here.
            _LIB.LGBM_FastConfigFree(config)
            self._config = None
