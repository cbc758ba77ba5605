"""The ``domain-mlflow`` command as a whole: every subcommand, its help, its mistakes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from domain_mlflow.cli import COMMANDS, build_parser, main
from tests.helpers import (
    REPO_ROOT,
    assert_one_line_error,
    run_cli,
    run_cli_process,
    write_jsonl,
)

# Commands that print data take --json; the servers print only where they listen.
PRINTS_DATA = set(COMMANDS) - {"dashboard"}


def _subcommands() -> dict:
    parser = build_parser()
    [group] = [a for a in parser._actions if a.dest == "command"]
    return group.choices


def test_every_command_of_the_spec_is_there_and_nothing_else():
    assert set(_subcommands()) == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: domain-mlflow {command}")
    assert len(out.splitlines()) > 3


@pytest.mark.parametrize("command", sorted(PRINTS_DATA))
def test_commands_that_print_data_take_json(command):
    options = {flag for action in _subcommands()[command]._actions
               for flag in action.option_strings}
    assert "--json" in options


def test_top_level_help_lists_every_command():
    # a real `python -m domain_mlflow.cli`: the entry point itself, as a user starts it
    done = run_cli_process("--help")
    assert done.returncode == 0
    for command in COMMANDS:
        assert f"    {command}" in done.stdout


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        ([], 2, "the following arguments are required: COMMAND"),
        (["no-such-command"], 2, "invalid choice: 'no-such-command'"),
        (["train", "--domain-id", "x"], 2, "the following arguments are required: --data"),
        (["pipeline", "t.json", "--project-id", "p", "--privacy-level", "max"], 2,
         "invalid choice: 'max'"),
        (["pipeline", "missing.json", "--project-id", "../p"], 2, "is not allowed"),
        (["demo", "--data-dir", "nowhere"], 2, "example data not found"),
        (["metrics", "x", "--days", "soon"], 2, "invalid int value: 'soon'"),
        (["webhook", "register"], 2, "webhook register needs --url"),
    ],
)
def test_mistakes_are_one_line_on_stderr_and_a_non_zero_exit(tmp_path, args, code, text):
    assert_one_line_error(run_cli(*args), code, text)


def test_a_pipeline_over_a_missing_table_fails_its_load_step_and_exits_1(tmp_path):
    done = run_cli("pipeline", str(tmp_path / "missing.json"), "--project-id", "p", "--json")
    assert done.returncode == 1, done.stderr
    steps = json.loads(done.stdout)["steps"]
    assert steps["load"]["status"] == "failed"
    assert "missing.json" in steps["load"]["error"]
    assert {steps[name]["status"] for name in steps if name != "load"} == {"skipped"}


# Runs the CLI, then prints which of the heavy libraries the process had loaded.
_HEAVY_LIBRARIES_LOADED = """
import sys
from domain_mlflow.cli import main
code = main(sys.argv[1:])
print(sorted(name for name in ("torch", "transformers", "mlflow") if name in sys.modules))
sys.exit(code)
"""


@pytest.mark.parametrize(("args", "environment", "text"), [
    (["--domain-id", "D", "--data", "{tmp}/missing.jsonl"], {}, "missing.jsonl: no such file"),
    (["--domain-id", "../D", "--data", "{tmp}/d.jsonl"], {}, "domain id '../D' is not allowed"),
    (["--domain-id", "D", "--data", "{tmp}"], {}, "is a directory"),
    (["--domain-id", "D", "--data", "/dev/null"], {},
     "/dev/null: not a regular file: a character device"),
    (["--domain-id", "D", "--data", "{tmp}/d.jsonl"], {"DEPLOY_ACCURACY_THRESHOLD": "abc"},
     "DEPLOY_ACCURACY_THRESHOLD='abc' is not valid"),
])
def test_a_train_mistake_is_reported_before_torch_transformers_and_mlflow_load(
        tmp_path, args, environment, text):
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}] * 2)
    done = subprocess.run(
        [sys.executable, "-c", _HEAVY_LIBRARIES_LOADED, "train",
         *(arg.format(tmp=tmp_path) for arg in args)],
        env={**os.environ, **environment}, capture_output=True, text=True, timeout=120,
        check=False)
    assert_one_line_error(done, 2, text)
    assert done.stdout == "[]\n"


def test_importing_the_package_the_cli_and_the_entry_point_loads_no_heavy_library():
    done = subprocess.run(
        [sys.executable, "-c", "import sys, domain_mlflow, domain_mlflow.cli, entrypoints.train;"
         "print(sorted(m for m in ('torch', 'transformers', 'mlflow') if m in sys.modules))"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout == "[]\n"


def test_the_mlproject_entry_point_reports_a_missing_file_as_the_cli_does(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "entrypoints.train", "--domain-id", "D", "--data",
         str(tmp_path / "missing.jsonl")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert_one_line_error(done, 2, "missing.jsonl: no such file")


# Every numeric option, each with values outside its range or not a number at all.
_TRAIN = ["train", "--domain-id", "d", "--data", "d.jsonl"]
_PIPELINE = ["pipeline", "t.json", "--project-id", "p"]
NUMERIC_OPTIONS = {
    ("history", "--limit"): (["history", "D"], ["-1", "0", "100001", "99999999999999999999"]),
    ("metrics", "--days"): (["metrics", "D"], ["0", "-5", "3651", "1e3", "²"]),
    ("promote", "--version"): (["promote", "D"], ["0", "-1", str(2**31), "1.5", "9" * 5000]),
    ("approve", "--version"): (["approve", "D", "--by", "a"], ["0", str(2**31)]),
    ("reject", "--version"): (["reject", "D", "--by", "a", "--reason", "r"], ["0", "-1"]),
    ("rollback", "--to"): (["rollback", "D"], ["0", str(2**63)]),
    ("poll", "--interval"): (["poll"], ["0", "-1", "nan", "inf", "86401", "1e400"]),
    ("monitor", "--interval"): (["monitor"], ["0", "nan", "-inf"]),
    ("webhook", "--port"): (["webhook"], ["-1", "65536", "99999999999999999999"]),
    ("webhook", "--workers"): (["webhook"], ["0", "65", "-2"]),
    ("dashboard", "--port"): (["dashboard"], ["0", "65536", "http"]),
    ("pipeline", "--max-steps"): (_PIPELINE, ["0", "10000001"]),
    ("pipeline", "--min-records"): (_PIPELINE, ["1", "-3"]),
    ("demo", "--max-steps"): (["demo"], ["0", "-1"]),
    ("train", "--max-steps"): (_TRAIN, ["0", "-1", "1" * 30]),
    ("train", "--learning-rate"): (_TRAIN, ["0", "-0.1", "nan", "inf", "11"]),
    ("train", "--lora-r"): (_TRAIN, ["0", "4097"]),
    ("train", "--batch-size"): (_TRAIN, ["0", "65537"]),
    ("train", "--eval-every"): (_TRAIN, ["0"]),
    ("train", "--checkpoint-every"): (_TRAIN, ["0"]),
    ("train", "--seed"): (_TRAIN, ["-1", str(2**32)]),
    ("train", "--max-length"): (_TRAIN, ["15", "32769"]),
    ("train", "--max-minutes"): (_TRAIN, ["0", "-5", "nan"]),
    ("train", "--eval-examples"): (_TRAIN, ["0", "-1"]),
    ("train", "--max-new-tokens"): (_TRAIN, ["0", "4097"]),
    ("canary", "--version"): (["canary", "start", "D"], ["0", str(2**31)]),
    ("canary", "--min-requests"): (["canary", "start", "D"], ["0", "-1"]),
    ("canary", "--bake-minutes"): (["canary", "start", "D"], ["-1", "nan", "100001"]),
    ("ab", "--version"): (["ab", "start", "D"], ["0", "-3"]),
    ("ab", "--min-requests"): (["ab", "start", "D"], ["0"]),
    ("ab", "--percent"): (["ab", "start", "D"], ["0", "101", "inf"]),
    ("ab", "--max-requests"): (["ab", "start", "D"], ["1", "100000001"]),
}


@pytest.mark.parametrize(("command", "option", "value"), [
    (command, option, value) for (command, option), (_, values) in NUMERIC_OPTIONS.items()
    for value in values])
def test_a_numeric_option_out_of_range_is_one_line_and_exit_2(command, option, value, capsys):
    prefix = NUMERIC_OPTIONS[(command, option)][0]
    with pytest.raises(SystemExit) as exited:  # the parser alone: no command runs
        build_parser().parse_args([*prefix, f"{option}={value}"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("domain-mlflow"), err
    assert f"argument {option}" in lines[0] and "Traceback" not in err
    assert len(lines[0]) < 300  # a 5000-digit value is not echoed back in full


def test_every_numeric_option_is_range_checked_by_the_parser():
    """A plain ``type=int``/``float`` takes -1 and 10**20 and hands them on."""
    unchecked, untested = [], []
    for name, sub in _subcommands().items():
        for action in sub._actions:
            if action.type in (int, float):
                if action.choices is None:
                    unchecked.append(f"{name} {action.option_strings[0]}")
            elif getattr(action.type, "__name__", "") in ("int", "float") and \
                    (name, action.option_strings[0]) not in NUMERIC_OPTIONS:
                untested.append(f"{name} {action.option_strings[0]}")
    assert (unchecked, untested) == ([], [])


def test_history_limit_in_range_reaches_the_store():
    done = run_cli("history", "0x5678-SQLAgent", "--limit", "1", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_every_option_and_positional_has_help_text():
    missing = [f"{name} {action.dest}" for name, sub in _subcommands().items()
               for action in sub._actions
               if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip()]
    assert missing == []


@pytest.mark.parametrize(("typed", "meant"), [("stauts", "status"), ("promte", "promote"),
                                              ("hisotry", "history"), ("dashbord", "dashboard")])
def test_a_mistyped_command_suggests_the_closest_one(typed, meant):
    assert_one_line_error(run_cli(typed), 2, f"did you mean '{meant}'?")


def test_force_without_a_reason_is_a_usage_error():
    assert_one_line_error(run_cli("promote", "D", "--version", "1", "--force"), 2,
                          "--force needs --reason")


def test_the_dashboard_takes_the_mlflow_ui_url_as_an_option(capsys):
    args = build_parser().parse_args(["dashboard", "--mlflow-ui-url", "http://127.0.0.1:5055"])
    assert args.mlflow_ui_url == "http://127.0.0.1:5055"
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["dashboard", "--mlflow-ui-url", "127.0.0.1:5055"])
    assert exited.value.code == 2
    assert "is not an http:// or https:// URL" in capsys.readouterr().err
