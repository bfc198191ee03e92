"""Purged walk-forward CV: exactly the overlapping training samples are removed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rrr_platform.ml.cv import purged_walk_forward

MIN = 60_000_000_000


def _windows(n: int, horizon: int, n_symbols: int = 1) -> tuple[np.ndarray, np.ndarray]:
    start = np.repeat(np.arange(n, dtype=np.int64) * MIN, n_symbols)
    return start, start + horizon * MIN


@pytest.mark.parametrize(("horizon", "embargo"), [(1, 0), (5, 0), (5, 3), (17, 10)])
def test_purging_removes_exactly_the_overlapping_samples(horizon: int, embargo: int) -> None:
    start, end = _windows(600, horizon, n_symbols=3)
    folds = purged_walk_forward(start, end, n_splits=4, embargo_ns=embargo * MIN, min_train=10)
    assert len(folds) == 4
    for fold in folds:
        test_lo = start[fold.test_idx].min()
        test_hi = end[fold.test_idx].max()
        lo, hi = test_lo - embargo * MIN, test_hi + embargo * MIN
        before = np.flatnonzero(start < start[fold.test_idx].min())
        # brute force, sample by sample: does the label window touch the embargoed test span?
        expected_kept = [i for i in before if end[i] < lo or start[i] > hi]
        expected_purged = [i for i in before if not (end[i] < lo or start[i] > hi)]
        assert fold.train_idx.tolist() == expected_kept
        assert fold.purged == len(expected_purged)
        # each of the horizon + embargo last minutes is purged, for every symbol
        assert fold.purged == (horizon + embargo) * 3
        # no kept training label window overlaps the test span
        assert np.all(end[fold.train_idx] < test_lo)


def test_folds_walk_forward_and_cover_the_later_blocks_once() -> None:
    start, end = _windows(500, 5, n_symbols=2)
    folds = purged_walk_forward(start, end, n_splits=4, min_train=10)
    tested = np.concatenate([f.test_idx for f in folds])
    assert len(tested) == len(np.unique(tested))
    for earlier, later in itertools.pairwise(folds):
        assert start[earlier.test_idx].max() < start[later.test_idx].min()
        assert len(later.train_idx) > len(earlier.train_idx)
    # all symbols of one minute land in the same test block
    for fold in folds:
        minutes = np.unique(start[fold.test_idx])
        assert len(fold.test_idx) == 2 * len(minutes)


def test_bad_windows_are_rejected_clearly() -> None:
    with pytest.raises(ValueError, match="ends before it starts"):
        purged_walk_forward(np.array([5, 6]), np.array([4, 7]))
    with pytest.raises(ValueError, match="distinct timestamps"):
        purged_walk_forward(np.array([1, 2]), np.array([3, 4]), n_splits=4)
