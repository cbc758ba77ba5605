"""The ``domain-mlflow`` command as a whole: every subcommand, its help, its mistakes."""

from __future__ import annotations

import json

import pytest

from domain_mlflow.cli import COMMANDS, build_parser, main
from tests.helpers import assert_one_line_error, run_cli

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
    done = run_cli("--help")
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
