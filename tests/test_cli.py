"""The ``quantlab`` command: every listed subcommand resolves, errors are one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from quantlab.cli import COMMANDS, cli


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_listed_command_resolves_and_has_help(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert isinstance(command, click.Command)
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert f" {name} " in result.output.splitlines()[0]  # "Usage: cli NAME [OPTIONS]..."


def test_help_lists_the_commands_without_importing_them() -> None:
    code = ("import sys; from quantlab.cli import main; sys.argv=['quantlab','--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in ('numba', 'pandas', 'huey') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    for name in COMMANDS:
        assert f"  {name} " in out
    assert "LOADED []" in out


def test_an_unknown_command_says_so() -> None:
    result = CliRunner().invoke(cli, ["backtset"])
    assert result.exit_code != 0
    assert "No such command 'backtset'" in result.output


def test_a_quantlab_error_is_one_line_with_exit_code_2(ql_home: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "quantlab", "status", "NOSUCHRUN"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: ")
    assert "Traceback" not in out.stderr
    assert "NOSUCHRUN" in out.stderr


@pytest.mark.slow
def test_demo_installs_the_sample_data_and_prints_metrics_and_a_sweep(ql_home: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "quantlab", "demo", "--fast", "10", "--slow",
                          "50"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    import quantlab as ql

    expected = ql.backtest("AAA", strategy="sma_crossover", params={"fast": 10, "slow": 50},
                           cash=100_000, commission=0.001)
    assert f"{expected.metrics['sharpe']:,.4f}" in out.stdout
    assert "Sweep of 209 combinations, best five by Sharpe" in out.stdout
