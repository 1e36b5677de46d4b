"""The ``gigaseg`` command shell: help, version, usage errors, --debug."""

from __future__ import annotations

import subprocess
import sys

import pytest

from workflows.cli import COMMANDS, main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workflows", *args], capture_output=True, text=True, check=False
    )


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("gigaseg ")


def test_help_lists_commands() -> None:
    result = _run("--help")
    assert result.returncode == 0
    assert "export-model" in result.stdout


def test_unknown_command_is_one_line_exit_2() -> None:
    result = _run("frobnicate")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "invalid choice: 'frobnicate'" in lines[0]


def test_bad_option_is_one_line_exit_2() -> None:
    result = _run("export-model", "x.safetensors", "--format", "tflite", "--out", "y")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "invalid choice: 'tflite'" in result.stderr


def test_debug_shows_traceback(tmp_path: pytest.TempPathFactory) -> None:
    args = ["export-model", "missing.safetensors", "--format", "onnx", "--out", "o.onnx"]
    plain = _run(*args)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    debug = _run("--debug", *args)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    assert "CheckpointError" in debug.stderr


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_every_registered_module_defines_the_interface() -> None:
    import importlib

    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"workflows.commands.{module_name}")
        except ModuleNotFoundError:
            continue  # a command whose module has not landed is simply not offered
        assert isinstance(module.HELP, str) and module.HELP, name
        assert callable(module.add_arguments) and callable(module.main), name
