"""Event counters, latency window statistics (against numpy.percentile) and the DiagnosticArray."""

from __future__ import annotations

import math

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.serialization import deserialize_message, serialize_message

from difftori_ros.convert import stamp_to_ns
from difftori_ros.diagnostics import (
    DEFAULT_EVENTS,
    ERROR,
    OK,
    STALE,
    WARN,
    DiagnosticsReporter,
    EventCounters,
    LatencyStats,
    LatencySummary,
    LevelRules,
    build_diagnostic_array,
    evaluate_level,
    level_name,
)


def test_event_counters() -> None:
    c = EventCounters()
    assert c.names == DEFAULT_EVENTS
    assert c.inc("ticks") == 1 and c.inc("ticks", 4) == 5
    c.inc("malformed_image")
    assert c["ticks"] == 5 and c.snapshot()["malformed_image"] == 1 and "deadline_miss" in c
    with pytest.raises(KeyError, match="malformed_imgae"):
        c.inc("malformed_imgae")
    c.reset()
    assert set(c.snapshot().values()) == {0}
    assert EventCounters(["x"]).snapshot() == {"x": 0}


@pytest.mark.parametrize("n", [1, 7, 999, 1000, 2500])
def test_latency_window_statistics_match_numpy(n: int) -> None:
    data = np.random.default_rng(n).lognormal(0.0, 0.7, n)
    stats = LatencyStats(window=1000)
    for value in data:
        stats.record(value)
    window = data[-1000:]
    np.testing.assert_array_equal(stats.values(), window)  # oldest first
    s = stats.summary()
    assert s.count == len(window) == len(stats)
    assert s.p50_ms == pytest.approx(np.percentile(window, 50), rel=1e-12)
    assert s.p99_ms == pytest.approx(np.percentile(window, 99), rel=1e-12)
    assert s.max_ms == window.max() and s.mean_ms == pytest.approx(window.mean(), rel=1e-12)
    assert stats.total_count == n and stats.lifetime_max_ms == data.max()


def test_latency_empty_reset_and_refusals() -> None:
    stats = LatencyStats(window=4)
    s = stats.summary()
    assert s.count == 0 and math.isnan(s.p99_ms)
    with pytest.raises(ValueError):
        stats.record(float("nan"))
    stats.record(3.0)
    stats.reset()
    assert len(stats) == 0 and stats.total_count == 0
    with pytest.raises(ValueError):
        LatencyStats(window=0)


def lat(p99: float) -> LatencySummary:
    return LatencySummary(100, 1.0, p99, p99 + 1, 1.2)


def test_levels() -> None:
    rules = LevelRules(warn_p99_ms=10.0, error_p99_ms=50.0, stale_if_no_ticks=True)
    assert evaluate_level({"ticks": 100}, lat(5.0), rules) == (OK, "ok: 100 ticks since the last report")
    level, msg = evaluate_level({"ticks": 100, "malformed_pointcloud": 3}, lat(5.0), rules)
    assert level == WARN and "3 malformed_pointcloud" in msg
    level, msg = evaluate_level({"ticks": 100}, lat(12.5), rules)
    assert level == WARN and "latency p99 12.50 ms > 10 ms" in msg
    level, msg = evaluate_level({"ticks": 100}, lat(60.0), rules)
    assert level == ERROR and "> 50 ms" in msg
    level, msg = evaluate_level({"ticks": 100, "nonfinite_output": 1}, lat(5.0), rules)
    assert level == ERROR and "1 nonfinite_output" in msg
    level, msg = evaluate_level({"ticks": 10, "safe_action_published": 6, "stale_observation": 6}, None, rules)
    assert level == ERROR and "safe action on 6/10 ticks" in msg and "6 stale_observation" in msg
    level, _ = evaluate_level({"ticks": 10, "safe_action_published": 2}, None, rules)
    assert level == WARN
    assert evaluate_level({"ticks": 0}, None, rules)[0] == STALE
    assert evaluate_level({"ticks": 0}, None, LevelRules())[0] == OK


def test_diagnostic_array_content() -> None:
    counters = EventCounters()
    counters.inc("ticks", 200)
    counters.inc("deadline_miss", 2)
    latency = LatencyStats(window=100)
    for v in range(1, 101):
        latency.record(float(v))
    arr = build_diagnostic_array("difftori_controller", counters, latency, stamp=12_000_000_345, hardware_id="arm0")
    arr = deserialize_message(serialize_message(arr), DiagnosticArray)
    assert stamp_to_ns(arr.header.stamp) == 12_000_000_345
    (status,) = arr.status
    assert status.name == "difftori_controller" and status.hardware_id == "arm0"
    assert status.level == DiagnosticStatus.WARN and level_name(status.level) == "WARN"
    assert "2 deadline_miss" in status.message
    values = {kv.key: kv.value for kv in status.values}
    for name in DEFAULT_EVENTS:
        assert name in values
    assert values["ticks"] == "200" and values["deadline_miss"] == "2" and values["nonfinite_output"] == "0"
    assert values["latency_count"] == "100"
    assert float(values["latency_p50_ms"]) == pytest.approx(np.percentile(np.arange(1, 101), 50), abs=1e-3)
    assert float(values["latency_p99_ms"]) == pytest.approx(np.percentile(np.arange(1, 101), 99), abs=1e-3)
    assert values["latency_max_ms"] == "100.000" and values["latency_mean_ms"] == "50.500"


def test_empty_latency_is_reported_as_not_available() -> None:
    arr = build_diagnostic_array("n", {"ticks": 0}, LatencyStats(), level_rules=LevelRules())
    values = {kv.key: kv.value for kv in arr.status[0].values}
    assert values["latency_count"] == "0" and values["latency_p99_ms"] == "n/a"
    assert arr.status[0].level == DiagnosticStatus.OK
    assert "latency_count" not in {kv.key for kv in build_diagnostic_array("n", {}, None).status[0].values}


def test_reporter_levels_follow_new_events_only() -> None:
    counters = EventCounters()
    reporter = DiagnosticsReporter("ctrl", counters, LatencyStats())
    counters.inc("ticks", 30)
    counters.inc("malformed_image")
    assert reporter.build().status[0].level == DiagnosticStatus.WARN
    counters.inc("ticks", 30)
    second = reporter.build(stamp=5).status[0]
    assert second.level == DiagnosticStatus.OK and "30 ticks" in second.message
    assert {kv.key: kv.value for kv in second.values}["malformed_image"] == "1"  # totals are kept
