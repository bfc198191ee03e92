"""Fast inference: XGBoost trees compiled to C (treelite + tl2cgen, built with the machine's gcc).

A raw ``Booster.inplace_predict`` call on one row costs ~190 µs here, nearly all of it wrapper
overhead (DMatrix proxy, config parsing, thread pool). The compiled library's ``predict`` walks the
trees for one row in well under a microsecond; it is called straight through ctypes on a
preallocated row buffer, so one uncached inference is a copy, a NaN check and one C call. Measured
against ONNX Runtime (``session.run`` alone costs tens of µs), compiled trees win for single rows;
for batches, tl2cgen's threaded predictor and ``inplace_predict`` are close, so the faster of the two
is measured per model and used (``batch_backend``).

The generated code encodes a missing value as the int -1 in a ``union {int missing; float fvalue}``;
NaN inputs are rewritten to that. Predictions equal XGBoost's to float32 rounding (checked at build:
a model whose compiled output differs by more than 1e-6 on probe rows is not used). Whenever
compilation or that check fails, the model falls back to XGBoost itself, logged, never an error.
Libraries are cached by the model's content hash, so a model is compiled once per machine.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import threading
import time
from pathlib import Path

# Before xgboost loads libgomp: idle OpenMP threads sleep instead of spinning. On this shared 2-core
# machine spinning made 2-thread training 5-10x slower than 1 thread; passive waiting fixes it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import xgboost as xgb

log = logging.getLogger(__name__)

MAX_ABS_DIFF = 1e-6
_compile_lock = threading.Lock()


class FastModel:
    """One model's fast predictor: ``predict_one(row)`` and ``predict_batch(X)``."""

    def __init__(
        self,
        booster: xgb.Booster,
        cache_dir: Path | None = None,
        compile_trees: bool = True,
        nthread: int = 2,
    ) -> None:
        self.booster = booster
        self.n_features = booster.num_features()
        self.nthread = nthread
        self.backend = "xgboost"
        self.batch_backend = "xgboost"
        self.fallback_reason = ""
        self._lib: ctypes.CDLL | None = None
        self._tl_predictor = None
        self._row = np.zeros(self.n_features, dtype=np.float32)
        self._row_bits = self._row.view(np.int32)
        self._out = np.zeros(1, dtype=np.float32)
        if compile_trees:
            try:
                self._build(cache_dir or Path.home() / ".cache" / "rrr-compiled-models")
            except Exception as exc:  # any compiler/toolchain failure: serve with XGBoost itself
                self.fallback_reason = f"{type(exc).__name__}: {exc}"
                self.backend = "xgboost"
                self._lib = None
                self._tl_predictor = None
                log.warning("tree compilation failed, using xgboost: %s", self.fallback_reason)

    def _build(self, cache_dir: Path) -> None:
        import tl2cgen
        import treelite

        raw = bytes(self.booster.save_raw("ubj"))
        digest = hashlib.sha256(raw).hexdigest()[:24]
        cache_dir.mkdir(parents=True, exist_ok=True)
        libpath = cache_dir / f"model-{digest}.so"
        with _compile_lock:
            if not libpath.exists():
                model_file = cache_dir / f"model-{digest}.ubj"
                model_file.write_bytes(raw)
                tl_model = treelite.frontend.load_xgboost_model(str(model_file))
                tmp = cache_dir / f"model-{digest}.so.tmp"
                tl2cgen.export_lib(
                    tl_model,
                    toolchain="gcc",
                    libpath=str(tmp),
                    params={"parallel_comp": 4},
                    nthread=self.nthread,
                )
                tmp.rename(libpath)  # atomic: a concurrent process never loads a half-written library
                model_file.unlink(missing_ok=True)
        lib = ctypes.CDLL(str(libpath))
        lib.predict.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        lib.predict.restype = None
        self._lib = lib
        self._predict_fn = lib.predict
        self._row_ptr = self._row.ctypes.data
        self._out_ptr = self._out.ctypes.data
        self._tl_predictor = tl2cgen.Predictor(str(libpath), nthread=self.nthread)
        self.backend = "compiled"
        self._verify()
        self._pick_batch_backend()

    def _pick_batch_backend(self, rows: int = 20_000) -> None:
        """Batches go to whichever of tl2cgen's threaded predictor and XGBoost's own is faster here.

        On shallow models the two are close and which one wins depends on tree shape and the
        machine, so it is measured once per model (~0.1 s) rather than assumed.
        """
        import tl2cgen

        probe = np.random.default_rng(1).normal(0, 1, (rows, self.n_features)).astype(np.float32)
        self.booster.set_param({"nthread": self.nthread})
        timings: dict[str, float] = {"compiled": float("inf"), "xgboost": float("inf")}
        for _ in range(2):
            start = time.perf_counter()
            self._tl_predictor.predict(tl2cgen.DMatrix(probe))  # type: ignore[union-attr]
            timings["compiled"] = min(timings["compiled"], time.perf_counter() - start)
            start = time.perf_counter()
            self.booster.inplace_predict(probe)
            timings["xgboost"] = min(timings["xgboost"], time.perf_counter() - start)
        self.batch_backend = min(timings, key=lambda k: timings[k])

    def _verify(self) -> None:
        rng = np.random.default_rng(0)
        probe = rng.normal(0, 1, (64, self.n_features)).astype(np.float32)
        probe[::7, 0] = np.nan
        expected = self.booster.inplace_predict(probe)
        single = np.array([self.predict_one(row) for row in probe])
        batch = self.predict_batch(probe)
        # 1e-6 absolute for outputs up to 1 (probabilities, volatilities); relative above, where float32
        # sums of many leaves in another order differ by a few ulps (1 ulp at 2.0 is 2.4e-7)
        scale = np.maximum(1.0, np.abs(expected))
        worst = max(
            float(np.max(np.abs(single - expected) / scale)), float(np.max(np.abs(batch - expected) / scale))
        )
        if not worst <= MAX_ABS_DIFF:
            raise ValueError(f"compiled predictions differ from xgboost by {worst:.2e}")

    def predict_one(self, row: np.ndarray) -> float:
        """One row of ``n_features`` values (NaN = missing) -> the model's output."""
        if self._lib is None:
            return float(self.booster.inplace_predict(np.asarray(row, dtype=np.float32).reshape(1, -1))[0])
        buf = self._row
        buf[:] = row
        missing = np.isnan(buf)
        if missing.any():
            self._row_bits[missing] = -1
        out = self._out
        out[0] = 0.0  # the generated predict() accumulates into its output
        self._predict_fn(self._row_ptr, 0, self._out_ptr)
        return float(out[0])

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        if self._tl_predictor is None or (self.batch_backend == "xgboost" and len(X) > 64):
            return np.asarray(self.booster.inplace_predict(X), dtype=np.float64)
        import tl2cgen

        return self._tl_predictor.predict(tl2cgen.DMatrix(X)).reshape(len(X)).astype(np.float64)
