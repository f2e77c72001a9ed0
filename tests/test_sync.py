"""Approximate time synchronization: pairing within tolerance, freshest set first, bounded buffers,
out-of-order arrivals, history frames and staleness (compared against brute force)."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

from difftori_ros.sync import ApproximateTimeSync, SyncedSet, is_stale

MS = 1_000_000


def test_pairs_the_freshest_set_within_tolerance() -> None:
    sync = ApproximateTimeSync(["cloud", "joints"], tolerance_ns=5 * MS, queue_size=10)
    for t in (0, 33, 66):
        sync.add("cloud", t * MS, f"cloud@{t}")
    for t in range(2, 80, 10):  # 2, 12, ..., 72
        sync.add("joints", t * MS, f"joints@{t}")
    got = sync.latest()
    # cloud 66 pairs with joints 62 (4 ms apart); joints 72 is 6 ms away
    assert got == SyncedSet(62 * MS, {"cloud": "cloud@66", "joints": "joints@62"})
    stamp, values = got  # unpacks as (stamp_ns, values)
    assert stamp == 62 * MS and set(values) == {"cloud", "joints"}
    assert sync.latest() == got  # not consumed


def test_nothing_within_tolerance_gives_none() -> None:
    sync = ApproximateTimeSync(["a", "b"], tolerance_ns=2 * MS)
    sync.add("a", 10 * MS, 1)
    assert sync.latest() is None and sync.missing_keys() == ["b"]
    sync.add("b", 13 * MS, 2)
    assert sync.latest() is None and sync.missing_keys() == []
    sync.add("b", 12 * MS, 3)  # exactly at the tolerance: accepted
    assert sync.latest() == SyncedSet(10 * MS, {"a": 1, "b": 3})


def test_prefers_fresh_over_tight() -> None:
    sync = ApproximateTimeSync(["a", "b"], tolerance_ns=10 * MS)
    sync.add("a", 100 * MS, "a_old")
    sync.add("b", 100 * MS, "b_old")  # perfect match, but older
    sync.add("a", 200 * MS, "a_new")
    sync.add("b", 209 * MS, "b_new")
    assert sync.latest() == SyncedSet(200 * MS, {"a": "a_new", "b": "b_new"})


def test_zero_tolerance_means_exact_stamps() -> None:
    sync = ApproximateTimeSync(["a", "b", "c"], tolerance_ns=0)
    for k in "abc":
        sync.add(k, 5, k)
    sync.add("a", 6, "a6")
    sync.add("b", 6, "b6")
    assert sync.latest() == SyncedSet(5, {"a": "a", "b": "b", "c": "c"})


def test_buffers_are_bounded_and_drops_counted() -> None:
    sync = ApproximateTimeSync(["a", "b"], tolerance_ns=MS, queue_size=5)
    for t in range(20):
        sync.add("a", t * MS, t)
    assert sync.buffered("a") == 5
    assert sync.stats()["dropped"]["a"] == 15 and sync.stats()["received"]["a"] == 20
    sync.add("b", 3 * MS, "b3")  # its partner a@3 was dropped long ago
    assert sync.latest() is None
    sync.add("b", 17 * MS, "b17")
    # oldest member b@17; a@18 is the newest "a" within 1 ms of it
    assert sync.latest() == SyncedSet(17 * MS, {"a": 18, "b": "b17"})


def test_out_of_order_and_duplicate_stamps() -> None:
    sync = ApproximateTimeSync(["a", "b"], tolerance_ns=MS, queue_size=3)
    for t in (30, 10, 20):
        sync.add("a", t * MS, f"a{t}")
    assert sync.stats()["out_of_order"]["a"] == 2
    sync.add("b", 20 * MS, "b20")
    assert sync.latest() == SyncedSet(20 * MS, {"a": "a20", "b": "b20"})
    # full queue: an arrival older than everything kept is itself the one dropped
    sync.add("a", 5 * MS, "a5")
    assert sync.buffered("a") == 3 and sync.stats()["dropped"]["a"] == 1
    assert sync.latest() == SyncedSet(20 * MS, {"a": "a20", "b": "b20"})
    # a late arrival newer than the oldest kept evicts the oldest (a10)
    sync.add("a", 15 * MS, "a15")
    sync.add("b", 10 * MS, "b10")
    assert [s.values["a"] for s in sync.history(3)] == ["a20"]
    sync.add("a", 20 * MS, "a20bis")  # same stamp: replaces
    assert sync.stats()["duplicates"]["a"] == 1 and sync.buffered("a") == 3
    assert sync.latest().values["a"] == "a20bis"


def test_history_returns_disjoint_sets_oldest_first() -> None:
    sync = ApproximateTimeSync(["cloud", "joints"], tolerance_ns=3 * MS, queue_size=8)
    for t in (0, 50, 100, 150):
        sync.add("cloud", t * MS, t)
        sync.add("joints", (t + 1) * MS, t + 1)
    frames = sync.history(2)
    assert [f.values for f in frames] == [{"cloud": 100, "joints": 101}, {"cloud": 150, "joints": 151}]
    assert frames[-1] == sync.latest()
    assert len(sync.history(10)) == 4
    assert ApproximateTimeSync(["x"], 0).history(2) == []


def test_clear_keeps_counters() -> None:
    sync = ApproximateTimeSync(["a"], tolerance_ns=0, queue_size=2)
    for t in range(3):
        sync.add("a", t, t)
    sync.clear()
    assert sync.latest() is None and sync.missing_keys() == ["a"] and sync.newest_stamp("a") is None
    assert sync.stats()["received"]["a"] == 3


def test_single_stream_returns_its_newest_message() -> None:
    sync = ApproximateTimeSync(["only"], tolerance_ns=0)
    for t in (3, 9, 4):
        sync.add("only", t, t)
    assert sync.latest() == SyncedSet(9, {"only": 9}) and sync.newest_stamp("only") == 9


def test_matches_brute_force_on_random_streams() -> None:
    rng = np.random.default_rng(0)
    keys = ("a", "b", "c")
    for trial in range(150):
        tol = int(rng.integers(0, 20))
        sync = ApproximateTimeSync(keys, tolerance_ns=tol, queue_size=5)
        for _ in range(int(rng.integers(3, 25))):
            key = keys[int(rng.integers(0, 3))]
            t = int(rng.integers(0, 100))
            sync.add(key, t, (key, t))
        # the buffers as kept (bounded, sorted): the brute force searches exactly what the sync can use
        buffers = {k: list(zip(sync._stamps[k], sync._values[k], strict=True)) for k in keys}
        valid = [
            combo
            for combo in itertools.product(*(buffers[k] for k in keys))
            if max(s for s, _ in combo) - min(s for s, _ in combo) <= tol
        ]
        got = sync.latest()
        if not valid:
            assert got is None, trial
            continue
        best_min = max(min(s for s, _ in combo) for combo in valid)
        assert got is not None and got.stamp_ns == best_min, trial
        stamps = [got.values[k][1] for k in keys]
        assert max(stamps) - min(stamps) <= tol and min(stamps) == best_min


def test_staleness() -> None:
    assert not is_stale(100 * MS, now_ns=150 * MS, max_age_ns=50 * MS)
    assert is_stale(100 * MS, now_ns=151 * MS, max_age_ns=50 * MS)
    assert not is_stale(200 * MS, now_ns=150 * MS, max_age_ns=50 * MS)  # future stamp: only with max_future
    assert is_stale(200 * MS, now_ns=150 * MS, max_age_ns=50 * MS, max_future_ns=10 * MS)
    s = SyncedSet(100 * MS, {})
    assert s.age_ns(130 * MS) == 30 * MS
    assert s.is_stale(200 * MS, 50 * MS) and not s.is_stale(120 * MS, 50 * MS)


def test_concurrent_adds_and_reads() -> None:
    sync = ApproximateTimeSync(["a", "b"], tolerance_ns=MS, queue_size=4)
    errors: list[BaseException] = []

    def writer(key: str) -> None:
        try:
            for t in range(2000):
                sync.add(key, t * MS, t)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in ("a", "b")]
    for th in threads:
        th.start()
    while any(th.is_alive() for th in threads):
        got = sync.latest()
        assert got is None or abs(got.values["a"] - got.values["b"]) <= 1
    for th in threads:
        th.join()
    assert not errors and sync.latest() == SyncedSet(1999 * MS, {"a": 1999, "b": 1999})


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ApproximateTimeSync([], tolerance_ns=0)
    with pytest.raises(ValueError):
        ApproximateTimeSync(["a", "a"], tolerance_ns=0)
    with pytest.raises(ValueError):
        ApproximateTimeSync(["a"], tolerance_ns=-1)
    with pytest.raises(ValueError):
        ApproximateTimeSync(["a"], tolerance_ns=0, queue_size=0)
    with pytest.raises(KeyError):
        ApproximateTimeSync(["a"], tolerance_ns=0).add("b", 0, None)
