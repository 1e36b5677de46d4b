"""docs/workflow-schema.md is generated from the pydantic model and must be up to date."""

from __future__ import annotations

from pathlib import Path

from workflows.schema_doc import DOC_PATH, main, render, render_defaults
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
    paths = ["--path", str(tmp_path / "schema.md"), "--defaults", str(tmp_path / "defaults.yaml")]
    assert main(["--check", *paths]) == 1
    assert main(paths) == 0
    assert main(["--check", *paths]) == 0
    (tmp_path / "defaults.yaml").write_text("tiling: {tile: 1024}\n")  # a default edited by hand
    assert main(["--check", *paths]) == 1


def test_defaults_yaml_is_generated_from_the_settings_objects() -> None:
    from pipeline.settings import TilingSettings, default_of
    from pipeline.vectorize.settings import VectorizeSettings
    from workflows.spec import DEFAULTS_PATH, load_defaults

    assert DEFAULTS_PATH.read_text() == render_defaults(), "run: python -m workflows.schema_doc"
    defaults = load_defaults()
    assert defaults["tiling"]["tile"] == default_of(TilingSettings, "tile")
    for name, value in defaults["vectorize"].items():
        assert value == default_of(VectorizeSettings, name), name
