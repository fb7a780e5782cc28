"""benchmarks/bench_ray.py: the steady-state rate from the workers' call records (a pure function);
the timed runs themselves are a benchmark, not a test."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def br():
    spec = importlib.util.spec_from_file_location("bench_ray", REPO / "benchmarks" / "bench_ray.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_ray"] = mod
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop("bench_ray", None)


def call(pid, start, end, n=8):
    return {"pid": pid, "start": start, "end": end, "n": n}


def test_window_opens_when_every_actor_is_warm(br):
    calls = [call(1, 0, 10), call(1, 10, 12), call(1, 12, 14), call(1, 14, 16),  # actor 1 warm at 10
             call(2, 3, 13), call(2, 13, 15), call(2, 15, 17)]  # actor 2 warm at 13: the window is [13, 17]
    w = br.steady_rate(calls)
    assert w["warm_at"] == 13 and w["end"] == 17 and w["window_s"] == 4
    # started at or after 13: (1, 14-16), (2, 13-15), (2, 15-17); (1, 12-14) straddles the start: left out
    assert w["calls"] == 3 and w["images"] == 24 and w["img_s"] == pytest.approx(6.0)
    assert w["processes"] == 2 and w["all_calls"] == 7 and w["all_images"] == 56


def test_rate_never_exceeds_the_work_done_in_the_window(br):
    # a burst of calls ending together (as rows arriving in bursts would suggest) counts only what ran in the window
    calls = [call(1, 0, 5), call(2, 0, 5), call(1, 5, 7), call(2, 5, 7), call(1, 7, 9), call(2, 7, 9)]
    w = br.steady_rate(calls)
    busy = sum(min(c["end"], w["end"]) - max(c["start"], w["warm_at"]) for c in calls if c["end"] > w["warm_at"])
    per_second_of_call = 8 / 2  # each call: 8 images in 2 s
    assert w["img_s"] == pytest.approx(8.0)
    assert w["img_s"] * w["window_s"] <= busy * per_second_of_call + 1e-9


def test_first_call_found_by_start_not_by_order(br):
    calls = [call(7, 4, 6), call(7, 0, 4)]  # records out of order: warm at 4
    w = br.steady_rate(calls)
    assert w["warm_at"] == 4 and w["images"] == 8 and w["img_s"] == pytest.approx(4.0)


@pytest.mark.parametrize("calls", [
    [],
    [call(1, 0, 5)],  # one chunk: nothing after warm-up
    [call(1, 0, 5), call(1, 5, 6), call(2, 0, 9)],  # actor 2 warms last and nothing starts after it
])
def test_no_window(br, calls):
    assert br.steady_rate(calls) is None
