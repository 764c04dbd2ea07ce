"""The benchmarks' arithmetic: percentiles and summaries, and the control-path benchmark itself."""

import math

import pytest

from load_tests.bench.measure import Sample, percentile, stack_shares, summary, tpot_p50_ms


@pytest.mark.parametrize("values,q,expected", [
    ([1, 2, 3, 4], 50, 2), ([1, 2, 3, 4], 99, 4), ([5], 95, 5), ([3, 1, 2], 100, 3), ([10, 20], 0, 10),
])
def test_percentile_is_nearest_rank(values, q, expected):
    assert percentile(values, q) == expected


def test_percentile_of_nothing_is_nan():
    assert math.isnan(percentile([], 50))


def test_summary_counts_errors_and_rates():
    samples = [Sample(True, 0.1, 0.05, 16), Sample(True, 0.3, 0.1, 16), Sample(False, 1.0, math.nan, 0)]
    s = summary(samples, wall=2.0)
    assert (s["requests"], s["errors"], s["p50_ms"], s["p99_ms"]) == (3, 1, 100.0, 300.0)
    assert (s["requests_per_second"], s["tokens_per_second"], s["ttft_p50_ms"]) == (1.0, 16.0, 50.0)


@pytest.mark.parametrize("samples,expected", [
    ([Sample(True, 0.32, 0.01, 32)], 10.0),  # 310 ms over the 31 tokens after the first
    ([Sample(True, 0.32, 0.01, 32), Sample(False, 9.0, 0.01, 32), Sample(True, 0.1, 0.1, 1)], 10.0),
])
def test_tpot_is_the_time_after_the_first_token_per_later_token(samples, expected):
    assert tpot_p50_ms(samples) == expected


def test_stack_shares_by_innermost_frame_and_own_code():
    folded = ("main (app.py:1);handle (serving/router.py:9);send (ray/actor.py:5) 6\n"
              "main (app.py:1);poll (ray/loop.py:2) 4\n")
    s = stack_shares(folded, "serving/")
    assert s["samples"] == 10
    assert s["by_leaf_share"] == {"send (ray/actor.py:5)": 0.6, "poll (ray/loop.py:2)": 0.4}
    assert s["in_own_code_share"] == 0.6
    assert s["by_own_frame_share"] == {"handle (serving/router.py:9)": 0.6}
    assert stack_shares("", "serving/")["samples"] == 0


def test_control_path_benchmark_runs_and_reports_growth():
    from load_tests.bench.benchmarks import control_path

    figures = control_path(sizes=(5, 20), repeat=1)
    assert [row["adapters"] for row in figures["sizes"]] == [5, 20] and figures["adapters_largest_over_smallest"] == 4
    assert figures["median_largest_over_smallest"] > 0
