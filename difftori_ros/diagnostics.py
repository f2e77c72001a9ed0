"""Event counters, latency statistics and their ``diagnostic_msgs/DiagnosticArray`` report.

The controller increments counters and records one latency per tick (both O(1), lock-protected
because subscription callbacks and the control tick may run on different executor threads); a slow
timer publishes :func:`build_diagnostic_array` (or :class:`DiagnosticsReporter`) on ``/diagnostics``.

Levels are decided on what happened *since the previous report* (counter deltas) plus the latency
window, not on lifetime totals: one malformed image an hour ago should not keep the node at WARN.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

from difftori_ros.convert import ns_to_stamp

__all__ = [
    "DEFAULT_EVENTS",
    "OK",
    "WARN",
    "ERROR",
    "STALE",
    "EventCounters",
    "LatencyStats",
    "LatencySummary",
    "LevelRules",
    "evaluate_level",
    "build_diagnostic_array",
    "DiagnosticsReporter",
    "level_name",
]

# DiagnosticStatus.level is a `byte` field (a 1-byte `bytes` in rclpy); rules work on ints.
OK, WARN, ERROR, STALE = 0, 1, 2, 3
_LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR", STALE: "STALE"}

DEFAULT_EVENTS: tuple[str, ...] = (
    "ticks",
    "malformed_image",
    "malformed_pointcloud",
    "malformed_joint_state",
    "stale_observation",
    "future_observation",
    "missing_sensor",
    "nonfinite_input",
    "nonfinite_output",
    "solver_failure",
    "deadline_miss",
    "safe_action_published",
)


class EventCounters:
    """Named monotonically increasing counters; only declared names (a typo is a KeyError, not a new counter)."""

    def __init__(self, names: Iterable[str] = DEFAULT_EVENTS) -> None:
        self._counts: dict[str, int] = dict.fromkeys(names, 0)
        self._lock = threading.Lock()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._counts)

    def inc(self, name: str, n: int = 1) -> int:
        """Add ``n`` to counter ``name`` and return its new value."""
        with self._lock:
            if name not in self._counts:
                raise KeyError(f"unknown event counter {name!r} (known: {list(self._counts)})")
            self._counts[name] += n
            return self._counts[name]

    def __getitem__(self, name: str) -> int:
        return self._counts[name]

    def __contains__(self, name: object) -> bool:
        return name in self._counts

    def snapshot(self) -> dict[str, int]:
        """A consistent copy of all counters."""
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            for name in self._counts:
                self._counts[name] = 0


class LatencySummary(NamedTuple):
    """Statistics over the latency window (NaN when it is empty); milliseconds."""

    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float


class LatencyStats:
    """Ring buffer of the last ``window`` latencies (ms); statistics are computed only when asked.

    Recording is O(1) (one array store), so it can run every tick; ``summary()`` sorts the window
    (~50 us for 1000 samples) and belongs in the slow diagnostics timer. Percentiles use numpy's
    default linear interpolation.
    """

    def __init__(self, window: int = 1000) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = int(window)
        self._buf = np.zeros(self.window, dtype=np.float64)
        self._next = 0
        self._filled = 0
        self._lock = threading.Lock()
        self.total_count = 0  # lifetime, not just the window
        self.lifetime_max_ms = -math.inf

    def record(self, latency_ms: float) -> None:
        """Add one latency; non-finite values are refused (they would poison every statistic)."""
        value = float(latency_ms)
        if not math.isfinite(value):
            raise ValueError(f"latency must be finite, got {latency_ms}")
        with self._lock:
            self._buf[self._next] = value
            self._next = (self._next + 1) % self.window
            if self._filled < self.window:
                self._filled += 1
            self.total_count += 1
            if value > self.lifetime_max_ms:
                self.lifetime_max_ms = value

    def __len__(self) -> int:
        return self._filled

    def values(self) -> np.ndarray:
        """The window's latencies, oldest first (a copy)."""
        with self._lock:
            if self._filled < self.window:
                return self._buf[: self._filled].copy()
            return np.concatenate([self._buf[self._next :], self._buf[: self._next]])

    def summary(self) -> LatencySummary:
        with self._lock:
            data = self._buf[: self._filled].copy()  # order is irrelevant to these statistics
        if data.size == 0:
            return LatencySummary(0, math.nan, math.nan, math.nan, math.nan)
        p50, p99 = np.percentile(data, [50.0, 99.0])
        return LatencySummary(int(data.size), float(p50), float(p99), float(data.max()), float(data.mean()))

    def reset(self) -> None:
        with self._lock:
            self._next = 0
            self._filled = 0
            self.total_count = 0
            self.lifetime_max_ms = -math.inf


@dataclass(frozen=True)
class LevelRules:
    """How counter deltas since the last report and the latency window map to a diagnostic level.

    * ERROR: any ``error_events`` occurred (a policy that emits NaN is broken, not unlucky), or at
      least ``error_safe_action_fraction`` of the ticks published the safe action (the node is not
      controlling), or latency p99 > ``error_p99_ms``.
    * WARN: any ``warn_events`` occurred (each is recoverable: the tick fell back), or latency p99 >
      ``warn_p99_ms``.
    * STALE: ``stale_if_no_ticks`` and no tick happened since the last report (set it while active).
    """

    warn_events: tuple[str, ...] = (
        "malformed_image",
        "malformed_pointcloud",
        "malformed_joint_state",
        "stale_observation",
        "future_observation",
        "missing_sensor",
        "unsynchronized",
        "wrong_frame",
        "invalid_input",
        "empty_workspace",
        "nonfinite_input",
        "solver_failure",
        "deadline_miss",
        "safe_action_published",
    )
    error_events: tuple[str, ...] = ("nonfinite_output",)
    error_safe_action_fraction: float = 0.5
    warn_p99_ms: float | None = None
    error_p99_ms: float | None = None
    stale_if_no_ticks: bool = False


def evaluate_level(
    deltas: Mapping[str, int], latency: LatencySummary | None, rules: LevelRules | None = None
) -> tuple[int, str]:
    """(level, human-readable message) for counter ``deltas`` since the last report and ``latency``."""
    rules = rules or LevelRules()
    errors: list[str] = []
    warnings: list[str] = []
    ticks = int(deltas.get("ticks", 0))
    for name in rules.error_events:
        if deltas.get(name, 0) > 0:
            errors.append(f"{deltas[name]} {name}")
    safe = int(deltas.get("safe_action_published", 0))
    if ticks > 0 and safe / ticks >= rules.error_safe_action_fraction:
        errors.append(f"safe action on {safe}/{ticks} ticks")
    for name in rules.warn_events:
        if deltas.get(name, 0) > 0 and name not in rules.error_events:
            warnings.append(f"{deltas[name]} {name}")
    if latency is not None and latency.count > 0:
        if rules.error_p99_ms is not None and latency.p99_ms > rules.error_p99_ms:
            errors.append(f"latency p99 {latency.p99_ms:.2f} ms > {rules.error_p99_ms:g} ms")
        elif rules.warn_p99_ms is not None and latency.p99_ms > rules.warn_p99_ms:
            warnings.append(f"latency p99 {latency.p99_ms:.2f} ms > {rules.warn_p99_ms:g} ms")

    if errors:
        level = ERROR
    elif warnings:
        level = WARN
    elif rules.stale_if_no_ticks and ticks == 0:
        return STALE, "no control ticks since the last report"
    else:
        return OK, f"ok: {ticks} ticks since the last report"
    # Errors first, then the warnings that explain them (e.g. the malformed inputs behind safe actions).
    return level, "; ".join(errors + warnings) + " since the last report"


def _format(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def build_diagnostic_array(
    node_name: str,
    counters: EventCounters | Mapping[str, int],
    latency: LatencyStats | LatencySummary | None,
    stamp: Time | int | None = None,
    level_rules: LevelRules | None = None,
    *,
    previous: Mapping[str, int] | None = None,
    hardware_id: str = "",
) -> DiagnosticArray:
    """One ``DiagnosticStatus`` (name ``node_name``) in a ``DiagnosticArray``.

    Values: every counter's lifetime total (key = counter name) and the latency window's
    ``latency_count``, ``latency_p50_ms``, ``latency_p99_ms``, ``latency_max_ms``, ``latency_mean_ms``.
    The level uses counter deltas against ``previous`` (the totals at the last report); without it
    the totals themselves count as "since the last report".
    """
    totals = counters.snapshot() if isinstance(counters, EventCounters) else dict(counters)
    base = previous or {}
    deltas = {name: total - int(base.get(name, 0)) for name, total in totals.items()}
    summary = latency.summary() if isinstance(latency, LatencyStats) else latency
    level, message = evaluate_level(deltas, summary, level_rules)

    status = DiagnosticStatus()
    status.level = bytes([level])
    status.name = node_name
    status.message = message
    status.hardware_id = hardware_id
    values = [KeyValue(key=name, value=str(int(total))) for name, total in totals.items()]
    if summary is not None:
        values.append(KeyValue(key="latency_count", value=str(summary.count)))
        for key in ("p50_ms", "p99_ms", "max_ms", "mean_ms"):
            values.append(KeyValue(key=f"latency_{key}", value=_format(getattr(summary, key))))
    status.values = values

    if stamp is None:
        stamp = Time()
    elif not isinstance(stamp, Time):
        stamp = ns_to_stamp(stamp)
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])


class DiagnosticsReporter:
    """Remembers the totals at the previous report so each report's level reflects only what is new."""

    def __init__(
        self,
        node_name: str,
        counters: EventCounters,
        latency: LatencyStats | None = None,
        level_rules: LevelRules | None = None,
        hardware_id: str = "",
    ) -> None:
        self.node_name = node_name
        self.counters = counters
        self.latency = latency
        self.level_rules = level_rules
        self.hardware_id = hardware_id
        self._previous: dict[str, int] = dict.fromkeys(counters.names, 0)

    def build(self, stamp: Time | int | None = None) -> DiagnosticArray:
        totals = self.counters.snapshot()
        array = build_diagnostic_array(
            self.node_name,
            totals,
            self.latency,
            stamp,
            self.level_rules,
            previous=self._previous,
            hardware_id=self.hardware_id,
        )
        self._previous = totals
        return array


def level_name(level: int | bytes) -> str:
    """'OK' / 'WARN' / 'ERROR' / 'STALE' for an int level or a DiagnosticStatus.level byte."""
    value = level[0] if isinstance(level, bytes) else int(level)
    return _LEVEL_NAMES.get(value, str(value))
