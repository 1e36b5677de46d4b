"""Config files we did not write: YAML alias bombs and huge values quoted in errors.

A few hundred bytes of YAML anchors can describe billions of values ("billion laughs"):
``yaml.safe_load`` builds them as shared objects in milliseconds, and the first thing that
walks them -- validation, or an error message quoting ``got {value!r}`` -- exhausts memory
(a 377-byte workflow took ``gigaseg run --dry-run`` to 24 GB). Expected: refused while loading,
with one short line naming the file; error messages never quote more than a bounded repr.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import ConfigError, short_repr
from workflows.commands.train import load_config
from workflows.spec import load_workflow, parse_set
from workflows.yamlfile import MAX_NODES, load_yaml


def alias_bomb(levels: int, width: int = 9, key: str = "inputs") -> str:
    """``levels`` chained anchors of ``width`` aliases each: ``width ** levels`` leaves."""
    names = "abcdefghijklmnop"
    lines = [f"a: &a [{','.join(['x'] * width)}]"]
    for below, name in itertools.pairwise(names[:levels]):
        lines.append(f"{name}: &{name} [{','.join([f'*{below}'] * width)}]")
    lines.append(f"{key}: *{names[levels - 1]}")
    return "\n".join(lines) + "\n"


def test_the_377_byte_bomb_is_refused_at_load_with_a_short_message(tmp_path: Path) -> None:
    # 9 ** 9 = 387 million leaves: expanding it (or printing it) needs tens of GB.
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(9))
    assert len(path.read_bytes()) < 400
    with pytest.raises(ConfigError, match=r"bomb\.yaml.*alias bomb") as caught:
        load_workflow(path, environ={})
    assert len(str(caught.value)) < 400


def test_a_smaller_bomb_in_a_bad_key_does_not_flood_the_message(tmp_path: Path) -> None:
    # 9 ** 6 = 531441 leaves: small enough to build, too large for a message. Today's code
    # (before the fix) quoted every one of them in "inputs[0]: must be ..., got [...]".
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(6) + "model: m.safetensors\n")
    with pytest.raises(ConfigError) as caught:
        load_workflow(path, environ={})
    assert len(str(caught.value)) < 1000


def test_the_bomb_is_refused_by_the_cli_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(9))
    result = subprocess.run(
        [sys.executable, "-m", "workflows", "run", str(path), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert "alias" in lines[0] and "bomb.yaml" in lines[0]


def test_training_configs_are_loaded_the_same_way(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(alias_bomb(9, key="data"))
    with pytest.raises(ConfigError, match=r"training config .*train\.yaml.*alias bomb"):
        load_config(path)


def test_set_values_are_loaded_the_same_way() -> None:
    value = "[" + ", ".join(["&a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + ["*a"] * 10) + "]"
    assert parse_set([f"read.bands={value}"])  # small aliasing is fine
    bomb = "{" + alias_bomb(9).strip().replace("\n", ", ") + "}"
    with pytest.raises(ConfigError, match=r"--set x.*alias bomb"):
        parse_set([f"x={bomb}"])


def test_a_self_referencing_alias_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"refers to itself"):
        load_yaml("a: &a [*a]", source="loop.yaml")


def test_ordinary_anchors_still_work_up_to_the_budget() -> None:
    assert load_yaml("a: &x {k: 1}\nb: *x", source="ok.yaml") == {"a": {"k": 1}, "b": {"k": 1}}
    # Just under the budget is accepted, just over is refused.
    width = 1000
    rows = (MAX_NODES - 10) // (width + 1) - 1
    text = f"r: &r [{', '.join(['1'] * width)}]\nall: [{', '.join(['*r'] * rows)}]"
    assert len(load_yaml(text, source="big.yaml")["all"]) == rows
    with pytest.raises(ConfigError, match="alias bomb"):
        load_yaml(text, source="big.yaml", max_nodes=MAX_NODES // 10)


def test_error_messages_quote_a_bounded_repr() -> None:
    shared = [list(range(1000))] * 1000
    assert len(short_repr(shared)) <= 200
    assert short_repr("x" * 10) == repr("x" * 10)
