"""The CV display: live bars in a terminal, plain lines in a log (a batch kernel, nohup, CI)."""
from __future__ import annotations

import io

import pytest
from rich.console import Console

from kit import config as config_io
from kit.cli.display import CVDisplay
from kit.runs import cv

pytestmark = pytest.mark.slow  # every test here trains a small run


def test_a_log_gets_one_line_per_epoch_and_no_bars(tmp_path, training, quick_config):
    log = io.StringIO()
    console = Console(file=log, force_terminal=False, width=200)
    with CVDisplay(console) as display:
        assert not display.live
        cv.run_cv(quick_config, training, tmp_path, listener=display)
    lines = log.getvalue().splitlines()
    epochs = [line for line in lines if " epoch " in line]
    # Two networks, two epochs each, both folds of a network on one line.
    assert len(epochs) == 4, lines
    assert epochs[0].startswith("15-key folds 1, 2 epoch 1/2 train ")
    assert "elapsed" in epochs[0] and "left" in epochs[-1]
    assert sum("validation RMSE of the kept weights" in line for line in lines) == 4
    assert "━" not in log.getvalue() and "\r" not in log.getvalue()


def test_a_terminal_gets_live_bars(tmp_path, training, quick_config):
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=200)
    with CVDisplay(console) as display:
        assert display.live
        cv.run_cv(quick_config, training, tmp_path, listener=display)
    assert "━" in screen.getvalue() and "whole run" in screen.getvalue()


def test_an_epoch_that_scores_no_held_out_rows_shows_no_validation(tmp_path, training,
                                                                   quick_config):
    log = io.StringIO()
    config = config_io.override(quick_config, ["train.select=last", "train.validate_every=2"])
    with CVDisplay(Console(file=log, force_terminal=False, width=200)) as display:
        cv.run_cv(config, training, tmp_path, listener=display)
    epochs = [line for line in log.getvalue().splitlines() if " epoch " in line]
    assert [" val " in line for line in epochs] == [False, True, False, True], epochs
