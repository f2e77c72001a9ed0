"""Stamp-based pairing of sensor streams for a control loop (message_filters is not available here).

Every control tick asks for the *freshest* complete observation (one message per stream, e.g. point
cloud + joint state, whose header stamps agree within a tolerance) and checks whether it is too old
to act on. The tick runs either when a message completes a newer set (the controller's
``tick_on_observation``) or from the control timer (the watchdog, or the clock when
``tick_on_observation`` is off); both pull: callbacks ``add`` messages into small bounded per-stream
buffers, the tick calls ``latest()`` (or ``history(n)`` for a consumer that wants several
synchronized frames).

Pure Python, no ROS import: stamps are integer nanoseconds (``convert.stamp_to_ns(msg.header.stamp)``),
values are whatever the caller stores (usually the message itself, or its converted array).
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Any, NamedTuple

__all__ = ["SyncedSet", "ApproximateTimeSync", "is_stale"]


def is_stale(stamp_ns: int, now_ns: int, max_age_ns: int, max_future_ns: int | None = None) -> bool:
    """Whether data stamped ``stamp_ns`` is too old to act on at ``now_ns``.

    ``max_future_ns`` (optional) also rejects stamps ahead of ``now_ns`` by more than that: a sensor
    clock running ahead would otherwise look perpetually fresh.
    """
    age = now_ns - stamp_ns
    if age > max_age_ns:
        return True
    return max_future_ns is not None and -age > max_future_ns


class SyncedSet(NamedTuple):
    """One synchronized observation: one value per stream.

    ``stamp_ns`` is the *oldest* member's stamp, so age and latency computed from it are conservative
    (members differ by at most the tolerance).
    """

    stamp_ns: int
    values: dict[str, Any]

    def age_ns(self, now_ns: int) -> int:
        return now_ns - self.stamp_ns

    def is_stale(self, now_ns: int, max_age_ns: int, max_future_ns: int | None = None) -> bool:
        return is_stale(self.stamp_ns, now_ns, max_age_ns, max_future_ns)


class ApproximateTimeSync:
    """Newest-first approximate time synchronizer over bounded per-stream buffers.

    Semantics:
    * A *set* takes one message from every stream; it is valid when ``max(stamps) - min(stamps) <=
      tolerance_ns``. ``latest()`` returns the valid set whose oldest member is newest (ties: the
      newest message of each stream that fits), or None while none exists. It does not consume:
      asking again without new data returns the same set, and the caller's staleness check decides.
    * Each stream keeps at most ``queue_size`` messages, sorted by stamp. Out-of-order arrivals are
      inserted in place (and counted); when full, the oldest stamp is dropped (counted), which may be
      the new message itself if it is older than everything kept. A repeated stamp replaces the
      stored value (counted as a duplicate).
    * Thread-safe: subscription callbacks may run on other executor threads than the control tick.

    ``queue_size`` must cover the tolerance window of the fastest stream relative to the slowest (e.g.
    a 100 Hz joint stream paired with a 30 Hz camera needs >= 4 to always hold a partner) plus the
    frames ``history(n)`` should be able to return.
    """

    def __init__(self, keys: Sequence[str], tolerance_ns: int, queue_size: int = 10) -> None:
        keys = tuple(keys)
        if not keys or len(set(keys)) != len(keys):
            raise ValueError(f"keys must be non-empty and distinct, got {keys}")
        if tolerance_ns < 0:
            raise ValueError(f"tolerance_ns must be >= 0, got {tolerance_ns}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.keys = keys
        self.tolerance_ns = int(tolerance_ns)
        self.queue_size = int(queue_size)
        self._lock = threading.Lock()
        # Parallel sorted lists rather than deques: bisect needs O(1) indexing and queues are short.
        self._stamps: dict[str, list[int]] = {k: [] for k in keys}
        self._values: dict[str, list[Any]] = {k: [] for k in keys}
        self._counts: dict[str, dict[str, int]] = {
            name: dict.fromkeys(keys, 0) for name in ("received", "dropped", "out_of_order", "duplicates")
        }

    def add(self, key: str, stamp_ns: int, value: Any) -> None:
        """Buffer ``value`` stamped ``stamp_ns`` for stream ``key`` (KeyError for an unknown stream)."""
        stamps, values = self._stamps[key], self._values[key]
        stamp = int(stamp_ns)
        with self._lock:
            self._counts["received"][key] += 1
            if stamps and stamp <= stamps[-1]:
                i = bisect_left(stamps, stamp)
                if i < len(stamps) and stamps[i] == stamp:
                    values[i] = value
                    self._counts["duplicates"][key] += 1
                    return
                self._counts["out_of_order"][key] += 1
            if len(stamps) >= self.queue_size:
                self._counts["dropped"][key] += 1
                if stamp < stamps[0]:
                    return  # older than everything kept: it is the one to drop
                del stamps[0], values[0]
            i = bisect_right(stamps, stamp)
            stamps.insert(i, stamp)
            values.insert(i, value)

    def latest(self) -> SyncedSet | None:
        """The freshest synchronized set, or None if no set fits the tolerance (or a stream is empty)."""
        with self._lock:
            found = self._best({k: len(s) for k, s in self._stamps.items()})
            return None if found is None else self._make_set(found)

    def history(self, n: int) -> list[SyncedSet]:
        """Up to ``n`` newest synchronized sets, oldest first, that share no message.

        Each earlier set uses, in every stream, a strictly older message than the set after it. Fewer
        than ``n`` come back when the buffers cannot supply them (e.g. at start-up); the caller decides
        whether to wait or pad.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        out: list[SyncedSet] = []
        with self._lock:
            limits = {k: len(s) for k, s in self._stamps.items()}
            while len(out) < n:
                found = self._best(limits)
                if found is None:
                    break
                out.append(self._make_set(found))
                limits = found  # next set: strictly older message in every stream
        out.reverse()
        return out

    def _best(self, limits: dict[str, int]) -> dict[str, int] | None:
        """Indices (per stream) of the valid set with the newest oldest-member, within ``stamps[k][:limits[k]]``.

        Every message is tried as the set's lower bound L; each stream then contributes its newest
        message in [L, L + tolerance]. The optimum's oldest member, tried as L, reproduces it, so the
        maximum over L is the optimum. Per stream, anchors go newest first and stop once they cannot
        beat the best set found. O(K^2 Q log Q) for K streams of Q messages: microseconds here.
        """
        best: dict[str, int] | None = None
        best_min = -1 << 127
        tol = self.tolerance_ns
        for anchor_key in self.keys:
            anchor_stamps = self._stamps[anchor_key]
            for a in range(limits[anchor_key] - 1, -1, -1):
                lower = anchor_stamps[a]
                if lower <= best_min:
                    break
                chosen: dict[str, int] = {}
                set_min = None
                for key in self.keys:
                    stamps = self._stamps[key]
                    j = bisect_right(stamps, lower + tol, 0, limits[key]) - 1
                    if j < 0 or stamps[j] < lower:
                        break
                    chosen[key] = j
                    set_min = stamps[j] if set_min is None else min(set_min, stamps[j])
                else:
                    if set_min > best_min:
                        best, best_min = chosen, set_min
        return best

    def _make_set(self, indices: dict[str, int]) -> SyncedSet:
        stamp = min(self._stamps[k][i] for k, i in indices.items())
        return SyncedSet(stamp, {k: self._values[k][i] for k, i in indices.items()})

    def missing_keys(self) -> list[str]:
        """Streams with nothing buffered (never received, or cleared): what to report as a missing sensor."""
        with self._lock:
            return [k for k in self.keys if not self._stamps[k]]

    def newest_stamp(self, key: str) -> int | None:
        """Stamp of the newest buffered message of ``key`` (None if empty)."""
        with self._lock:
            stamps = self._stamps[key]
            return stamps[-1] if stamps else None

    def buffered(self, key: str) -> int:
        """How many messages of ``key`` are buffered (never more than ``queue_size``)."""
        with self._lock:
            return len(self._stamps[key])

    def stats(self) -> dict[str, dict[str, int]]:
        """Counters since construction: ``{"received"|"dropped"|"out_of_order"|"duplicates": {key: n}}``."""
        with self._lock:
            return {name: dict(per_key) for name, per_key in self._counts.items()}

    def clear(self) -> None:
        """Forget buffered messages (e.g. on lifecycle deactivate) but keep the counters."""
        with self._lock:
            for key in self.keys:
                self._stamps[key].clear()
                self._values[key].clear()
