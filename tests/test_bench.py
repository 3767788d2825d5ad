"""The benchmarks keep working as the kit changes: `make bench` imports every suite, and the
test-time-view suite runs on a finished run (the others need the practice data or minutes)."""
from __future__ import annotations

import importlib

import pytest

SUITES = ["bench_augment", "bench_cv", "bench_fold", "bench_folds", "bench_parse", "bench_torch",
          "bench_train", "bench_tta", "bench_widths"]


@pytest.mark.parametrize("name", SUITES)
def test_every_suite_imports_against_the_kit_as_it_is(name):
    importlib.import_module(f"bench.{name}")


def test_the_test_time_views_of_a_finished_run_are_scored(quick_run, synth_competition):
    from bench import bench_tta

    _, data_dir = synth_competition
    figures = bench_tta.run([str(quick_run), "--data", str(data_dir), "--views", "none", "run"])
    assert set(figures) == {"none", "run"}
    assert all("LB estimate" in text for text in figures.values())


@pytest.mark.slow
def test_the_widths_suite_times_each_factor_beside_the_base_width():
    from bench import bench_widths

    figures = bench_widths.run(["--preset", "quick", "--widen", "2", "--steps", "2"])
    assert list(figures) == ["x1", "x2"]
    assert figures["x1"].startswith("8/16 ") and "1.00x the time" in figures["x1"]
    assert figures["x2"].startswith("16/32 ") and "(width^2 4.00)" in figures["x2"]
