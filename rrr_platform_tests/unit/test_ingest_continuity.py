from rrr_platform.ingest.backoff import Backoff
from rrr_platform.ingest.continuity import ContinuityTracker, Gap


def test_consecutive_ids_are_no_gap_and_a_jump_is_exactly_the_missing_range() -> None:
    tracker = ContinuityTracker()
    assert [tracker.observe("v", "S", "instrument", seq) for seq in (10, 11, 12)] == [None] * 3
    gap = tracker.observe("v", "S", "instrument", 16)
    assert gap == Gap("v", "S", "instrument", 13, 15) and gap.size == 3
    assert tracker.observe("v", "S", "instrument", 17) is None


def test_repeats_and_late_arrivals_are_not_gaps_and_do_not_rewind() -> None:
    tracker = ContinuityTracker()
    tracker.observe("v", "S", "instrument", 100)
    assert tracker.observe("v", "S", "instrument", 100) is None  # duplicate
    assert tracker.observe("v", "S", "instrument", 98) is None  # late
    assert tracker.out_of_order == 2
    assert tracker.observe("v", "S", "instrument", 101) is None


def test_symbols_are_independent_and_seed_continues_a_stored_sequence() -> None:
    tracker = ContinuityTracker()
    tracker.seed("v", "A", 50)
    assert tracker.observe("v", "B", "instrument", 7) is None  # first sight of B: nothing to compare
    assert tracker.observe("v", "A", "instrument", 60) == Gap("v", "A", "instrument", 51, 59)
    tracker.seed("v", "A", 10)  # seeding never rewinds
    assert tracker.last("v", "A") == 60


def test_connection_scope_resets_with_the_connection() -> None:
    tracker = ContinuityTracker()
    tracker.observe("v", "", "connection", 5, "c1")
    assert tracker.observe("v", "", "connection", 7, "c1") == Gap("v", "", "connection", 6, 6)
    tracker.reset_connection("c1")
    assert tracker.observe("v", "", "connection", 1, "c1") is None


def test_backoff_is_capped_jittered_and_resets() -> None:
    backoff = Backoff(initial=0.1, cap=1.0)
    delays = [backoff.next_delay() for _ in range(10)]
    assert all(0.05 <= d <= 1.0 for d in delays)
    assert max(delays[5:]) <= 1.0 and min(delays[5:]) >= 0.5  # at the cap: within [cap/2, cap]
    assert len(set(delays)) > 5  # jitter
    backoff.reset()
    assert backoff.next_delay() <= 0.1
