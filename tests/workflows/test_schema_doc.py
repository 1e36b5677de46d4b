"""docs/workflow-schema.md is generated from the pydantic model and must be up to date."""

from __future__ import annotations

from pathlib import Path

from workflows.schema_doc import DOC_PATH, main, render
from workflows.spec import Workflow


def test_schema_page_is_up_to_date() -> None:
    assert DOC_PATH.exists(), "run: python -m workflows.schema_doc"
    assert DOC_PATH.read_text() == render(), "stale; run: python -m workflows.schema_doc"


def test_every_key_is_documented() -> None:
    text = render()
    for name in Workflow.model_fields:
        assert f"| `{name}` |" in text
    for key in ("tiling.tile", "cluster.slurm.gpus", "cluster.pbs.prologue", "exports[].format"):
        assert f"| `{key}` |" in text
    assert "| `inputs` | list of mappings | **required** |" in text
    assert "| `tiling.tile` | integer (> 0) | `2048` |" in text


def test_check_mode(tmp_path: Path) -> None:
    page = tmp_path / "schema.md"
    assert main(["--check", "--path", str(page)]) == 1
    assert main(["--path", str(page)]) == 0
    assert main(["--check", "--path", str(page)]) == 0
