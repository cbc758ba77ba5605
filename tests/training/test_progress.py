"""The progress helper: when a line is due, what it says, bar or lines."""

from __future__ import annotations

import logging

import pytest

from domain_mlflow.training.progress import Progress, ProgressSchedule, progress_line


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _due_steps(schedule: ProgressSchedule, clock: FakeClock, steps: range,
               seconds_per_step: float) -> list[int]:
    due = []
    for done in steps:
        clock.now += seconds_per_step
        if schedule.due(done):
            due.append(done)
    return due


def test_fast_steps_get_a_line_at_each_five_percent_mark_and_the_last_step():
    clock = FakeClock()
    schedule = ProgressSchedule(total=200, interval_seconds=10.0, clock=clock)
    due = _due_steps(schedule, clock, range(1, 201), seconds_per_step=0.01)
    assert due == list(range(10, 201, 10))


def test_slow_steps_get_a_line_every_interval_between_the_marks():
    clock = FakeClock()
    schedule = ProgressSchedule(total=1000, interval_seconds=10.0, clock=clock)
    # 3 s a step: 10 s pass every fourth step, long before the next 5% (50 steps).
    due = _due_steps(schedule, clock, range(1, 13), seconds_per_step=3.0)
    assert due == [4, 8, 12]


def test_the_interval_counts_from_the_last_line_whatever_made_it_due():
    clock = FakeClock()
    schedule = ProgressSchedule(total=20, interval_seconds=10.0, clock=clock)
    clock.now += 9.0
    assert schedule.due(1)  # 1 of 20 is the first 5% mark
    clock.now += 9.0
    assert schedule.due(2)  # the next mark, 9 s after the line at step 1
    clock.now += 0.5
    assert not schedule.due(2)  # the same step again: no mark passed, no interval passed
    clock.now += 10.0
    assert schedule.due(2)


def test_a_resumed_run_counts_marks_from_where_it_resumed():
    clock = FakeClock()
    schedule = ProgressSchedule(total=100, start=52, interval_seconds=10.0, clock=clock)
    due = _due_steps(schedule, clock, range(53, 61), seconds_per_step=0.1)
    assert due == [55, 60]


def test_an_interval_of_zero_gives_every_step_a_line():
    clock = FakeClock()
    schedule = ProgressSchedule(total=1000, interval_seconds=0.0, clock=clock)
    assert _due_steps(schedule, clock, range(1, 6), seconds_per_step=0.001) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("taken", "elapsed", "expected"),
    [
        (30, 10.0, "training: step 30 of 400 (7%), 3.00 steps/s, ETA 2m03s"),
        (3, 12.0, "training: step 30 of 400 (7%), 4.00 s/step, ETA 24m40s"),
        (0, 0.0, "training: step 30 of 400 (7%)"),
    ],
)
def test_a_line_says_what_where_how_fast_and_how_long_is_left(taken, elapsed, expected):
    assert progress_line("training", "step", 30, 400, taken, elapsed) == expected


def test_a_line_carries_the_extra_values_after_the_eta():
    assert progress_line("evaluation", "example", 2, 4, 2, 4.0, {"loss": "0.5"}) == \
        "evaluation: example 2 of 4 (50%), 2.00 s/example, ETA 0m04s, loss 0.5"


def test_without_a_bar_progress_is_logged_at_info(caplog):
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="domain_mlflow.training.progress")
    with Progress("pretraining", 4, bar=False, clock=clock) as progress:
        for done in range(1, 5):
            clock.now += 0.5
            progress.update(done, loss="1.0")
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert lines == [f"pretraining: step {n} of 4 ({25 * n}%), 2.00 steps/s, ETA {eta}, loss 1.0"
                     for n, eta in [(1, "0m02s"), (2, "0m01s"), (3, "0m00s"), (4, "0m00s")]]


@pytest.mark.parametrize(("bar", "silent"), [(True, False), (False, True)])
def test_a_bar_or_silence_logs_nothing(caplog, bar, silent):
    caplog.set_level(logging.INFO, logger="domain_mlflow.training.progress")
    with Progress("training", 3, bar=bar, silent=silent, interval_seconds=0.0) as progress:
        for done in range(1, 4):
            progress.update(done)
    assert caplog.records == []
