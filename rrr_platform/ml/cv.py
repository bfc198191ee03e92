"""Purged walk-forward cross-validation with an embargo.

Each sample has an event window ``[start_ns, end_ns]``: the bar it is observed at and the last instant
its label looks at. Test folds are contiguous blocks of time (every symbol at one timestamp lands in
the same block). A training sample is kept only if its window does not touch the test fold's span
widened by the embargo on both sides, so no training label ever sees data the test fold is scored on
(López de Prado, *Advances in Financial Machine Learning*, ch. 7). Walk-forward: training uses only
samples before the test fold (an expanding window); the first block is training only.

scikit-learn's ``TimeSeriesSplit`` has a ``gap`` but counts rows, not time, and knows nothing of label
windows, so this is written out here (a few numpy lines).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Fold:
    index: int
    train_idx: np.ndarray  # positions into the sample arrays
    test_idx: np.ndarray
    test_start_ns: int
    test_end_ns: int
    purged: int  # training candidates dropped because their window overlaps the (embargoed) test span


def overlaps(start_ns: np.ndarray, end_ns: np.ndarray, span_start_ns: int, span_end_ns: int) -> np.ndarray:
    """Mask of windows ``[start, end]`` that intersect the closed span ``[span_start, span_end]``."""
    return (start_ns <= span_end_ns) & (end_ns >= span_start_ns)


def purged_walk_forward(
    start_ns: np.ndarray,
    end_ns: np.ndarray,
    n_splits: int = 4,
    embargo_ns: int = 0,
    min_train: int = 50,
) -> list[Fold]:
    """Folds over samples with event windows ``[start_ns[i], end_ns[i]]`` (int ns, any order).

    Time is cut into ``n_splits + 1`` blocks of equal numbers of distinct timestamps; fold k tests
    block k + 1 and trains on every earlier sample whose window stays clear of the test span.
    """
    start_ns = np.asarray(start_ns, dtype=np.int64)
    end_ns = np.asarray(end_ns, dtype=np.int64)
    if start_ns.shape != end_ns.shape or start_ns.ndim != 1:
        raise ValueError("start_ns and end_ns must be 1-d arrays of one length")
    if np.any(end_ns < start_ns):
        raise ValueError("an event window ends before it starts")
    if n_splits < 1:
        raise ValueError("n_splits must be at least 1")
    times = np.unique(start_ns)
    if len(times) < n_splits + 1:
        raise ValueError(f"{len(times)} distinct timestamps cannot make {n_splits} walk-forward folds")
    bounds = np.linspace(0, len(times), n_splits + 2).astype(int)
    folds: list[Fold] = []
    for k in range(n_splits):
        block_first, block_last = times[bounds[k + 1]], times[bounds[k + 2] - 1]
        test_mask = (start_ns >= block_first) & (start_ns <= block_last)
        test_idx = np.flatnonzero(test_mask)
        test_start, test_end = int(start_ns[test_idx].min()), int(end_ns[test_idx].max())
        candidates = start_ns < block_first
        blocked = overlaps(start_ns, end_ns, test_start - embargo_ns, test_end + embargo_ns)
        train_idx = np.flatnonzero(candidates & ~blocked)
        if len(train_idx) < min_train:
            continue  # too little history before this block to fit anything honest
        folds.append(
            Fold(
                index=len(folds),
                train_idx=train_idx,
                test_idx=test_idx,
                test_start_ns=test_start,
                test_end_ns=test_end,
                purged=int(np.count_nonzero(candidates & blocked)),
            )
        )
    if not folds:
        raise ValueError("no fold has enough training samples; give more history or fewer splits")
    return folds
