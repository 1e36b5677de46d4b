"""Workflow files: schema validation with key paths, layered settings, shipped defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError
from workflows.spec import (
    Workflow,
    load_defaults,
    load_workflow,
    merge,
    parse_set,
    settings_from_env,
)

BASE: dict[str, Any] = {"inputs": ["a.tif"], "model": "m.safetensors"}


def load(extra: dict[str, Any], environ: dict[str, str] | None = None) -> Workflow:
    return load_workflow(merge(BASE, extra), environ=environ or {})[0]


def test_minimal_file_gets_the_shipped_defaults() -> None:
    wf = load({})
    assert wf.tiling.tile == 2048
    assert wf.tiling.halo == "auto"
    assert wf.cluster.type == "local"
    assert wf.cluster.local.dashboard_address == "127.0.0.1:0"
    assert wf.output.store == "{dir}/{stem}.zarr"
    assert wf.inputs[0].path == "a.tif"


def test_defaults_yaml_matches_the_schema_defaults() -> None:
    # defaults.yaml is the documented lowest layer; the pydantic defaults must agree with it.
    from_yaml = load_defaults()
    from_model = Workflow.model_validate(BASE).model_dump()
    for key, value in from_yaml.items():
        assert from_model[key] == value, key
    assert set(from_yaml) | {"inputs", "model"} == set(Workflow.model_fields)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"tiling": {"tyle": 512}}, r"tiling\.tyle: unknown key; did you mean 'tile'\?"),
        ({"tilling": {}}, r"tilling: unknown key; did you mean 'tiling'\?"),
        ({"cluster": {"slurm": {"qeue": "gpu"}}}, r"cluster\.slurm\.qeue: unknown key"),
        ({"tiling": {"tile": "big"}}, r"tiling\.tile: must be a valid integer.*got 'big'"),
        ({"tiling": {"tile": -5}}, r"tiling\.tile: must be greater than 0, got -5"),
        (
            {"tiling": {"halo": "wide"}},
            r"tiling\.halo: must be auto or an integer >= 0, got 'wide'",
        ),
        ({"tiling": {"tile": 256, "patch": 512}}, r"tiling: patch \(512\) must not exceed tile"),
        ({"inference": {"device": "gpu"}}, r"inference\.device: must be auto, cpu, mps, cuda"),
        ({"inference": {"precision": "fp8"}}, r"inference\.precision: must be 'auto', 'fp32'"),
        ({"inference": {"threshold": 2}}, r"inference\.threshold: must be less than or equal to 1"),
        ({"inputs": []}, r"inputs: must not be empty"),
        (
            {"inputs": [{"path": "a.tif", "bands": [0]}]},
            r"inputs\[0\]\.bands\[0\]: must be greater",
        ),
        (
            {"inputs": ["a.tif", 3]},
            r"inputs\[1\]: must be a mapping "
            r"\(keys: assets, bands, level, mpp, path, source_mpp, tissue\)",
        ),
        (
            {"inputs": [{"path": "s.svs", "level": 0, "mpp": 0.5}]},
            r"inputs\[0\]: give level or mpp",
        ),
        ({"inputs": [{"bands": [1]}]}, r"inputs\[0\]\.path: required key is missing"),
        ({"output": {"store": "{foo}.zarr"}}, r"output\.store: unknown placeholder \{foo\}"),
        ({"output": {"report": "{stem}.json"}}, r"output\.report: unknown placeholder \{stem\}"),
        ({"exports": [{"path": "{stem}.txt"}]}, r"exports\[0\]: cannot infer the format of"),
        ({"exports": [{"path": "a.geojson", "format": "kml"}]}, r"exports\[0\]\.format: must be"),
        ({"vectorize": {"connectivity": 6}}, r"vectorize\.connectivity: must be 4 or 8"),
        (
            {"cluster": {"type": "lsf"}},
            r"cluster\.type: must be 'local', 'slurm', 'pbs' or 'address'",
        ),
        (
            {"cluster": {"type": "address"}},
            r"cluster\.address: required when cluster\.type is address",
        ),
        ({"cluster": {"address": "nowhere"}}, r"cluster\.address: must look like tcp://HOST:PORT"),
        (
            {"cluster": {"slurm": {"walltime": "2h"}}},
            r"cluster\.slurm\.walltime: must look like HH:MM:SS or D-HH:MM:SS, got '2h'",
        ),
        (
            {"cluster": {"pbs": {"memory": "lots"}}},
            r"cluster\.pbs\.memory: must be a size such as 16GB or 4GiB, got 'lots'",
        ),
        (
            {"cluster": {"slurm": {"cores": 4, "memory": "8GB", "gpus": 3, "processes": 2}}},
            r"cluster\.slurm: gpus \(3\) must be a multiple of processes \(2\)",
        ),
        (
            {"cluster": {"slurm": {"min_jobs": 3, "max_jobs": 2}}},
            r"cluster\.slurm: min_jobs \(3\) exceeds max_jobs \(2\)",
        ),
        ({"scenes_in_flight": 0}, r"scenes_in_flight: must be greater than 0"),
        ({"version": 2}, r"version: must be 1"),
    ],
)
def test_schema_errors_name_the_key(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(extra)


def test_missing_required_keys() -> None:
    with pytest.raises(ConfigError, match=r"2 problems: inputs: required key is missing; "):
        load_workflow({}, environ={})
    with pytest.raises(ConfigError, match=r"model: required key is missing"):
        load_workflow({"inputs": ["a.tif"]}, environ={})


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_cluster_missing_required_settings(kind: str) -> None:
    with pytest.raises(ConfigError, match=rf"cluster\.{kind}\.cores: required when cluster\.type"):
        load({"cluster": {"type": kind}})
    with pytest.raises(ConfigError, match=rf"cluster\.{kind}\.memory: required when cluster\.type"):
        load({"cluster": {"type": kind, kind: {"cores": 4}}})
    # Settings of a cluster type that is not selected are not required.
    assert load({"cluster": {"type": "local"}}).cluster.type == "local"


def test_all_problems_are_reported_at_once() -> None:
    message = r"4 problems: .*tiling\.tile.*tiling\.batch.*cluster\.slurm\.cores"
    with pytest.raises(ConfigError, match=message):
        load({"tiling": {"tile": 0, "batch": 0}, "cluster": {"type": "slurm"}})


def test_string_inputs_are_short_for_a_path() -> None:
    wf = load({"inputs": ["a.tif", {"path": "b/*.svs", "level": 1}]})
    assert [i.path for i in wf.inputs] == ["a.tif", "b/*.svs"]
    assert wf.inputs[1].level == 1
    assert load({"inputs": "one.tif"}).inputs[0].path == "one.tif"


def test_layers_defaults_env_file_cli(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text("inputs: [a.tif]\nmodel: m.safetensors\ntiling:\n  batch: 2\n")
    env = {
        "GIGASEG_WORKFLOW__TILING__TILE": "1024",
        "GIGASEG_WORKFLOW__TILING__BATCH": "8",
        "GIGASEG_WORKFLOW__CLUSTER__SLURM__ACCOUNT": "proj42",
        "UNRELATED": "x",
    }
    wf, source = load_workflow(path, environ=env)
    assert source == path
    assert wf.name == "wf"  # the file's stem
    assert wf.tiling.tile == 1024  # environment over defaults
    assert wf.tiling.batch == 2  # file over environment
    assert wf.cluster.slurm.account == "proj42"
    wf, _ = load_workflow(path, environ=env, overrides=parse_set(["tiling.batch=16"]))
    assert wf.tiling.batch == 16  # command line over file


def test_env_errors_keep_the_key_path() -> None:
    with pytest.raises(ConfigError, match=r"tiling\.tile: must be a valid integer"):
        load({}, environ={"GIGASEG_WORKFLOW__TILING__TILE": "huge"})
    assert settings_from_env({"GIGASEG_WORKFLOW__A__B": "[1, 2]"}) == {"a": {"b": [1, 2]}}


def test_parse_set() -> None:
    assert parse_set(["tiling.tile=512", "cluster.type=slurm", "exports=[]"]) == {
        "tiling": {"tile": 512},
        "cluster": {"type": "slurm"},
        "exports": [],
    }
    with pytest.raises(ConfigError, match=r"--set 'tiling': expected KEY\.PATH=VALUE"):
        parse_set(["tiling"])


def test_merge_replaces_lists_and_merges_mappings() -> None:
    assert merge({"a": [1, 2], "b": {"c": 1, "d": 2}}, {"a": [3], "b": {"d": 4}}) == {
        "a": [3],
        "b": {"c": 1, "d": 4},
    }


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"workflow file .*nope\.yaml does not exist"):
        load_workflow(tmp_path / "nope.yaml", environ={})
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match=r"empty\.yaml: the workflow file is empty"):
        load_workflow(empty, environ={})
    broken = tmp_path / "broken.yaml"
    broken.write_text("inputs: [a.tif\nmodel: m\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml line \d+: not valid YAML"):
        load_workflow(broken, environ={})
    listing = tmp_path / "list.yaml"
    listing.write_text("- a.tif\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: a workflow file is a mapping of keys"):
        load_workflow(listing, environ={})


def test_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text("inputs: [a.tif]\nmodel: m.safetensors\ntiling: {tile: 0}\n")
    with pytest.raises(ConfigError, match=r"wf\.yaml: tiling\.tile: must be greater than 0"):
        load_workflow(path, environ={})


def test_jobqueue_worker_processes() -> None:
    wf = load({"cluster": {"slurm": {"cores": 8, "memory": "32GB", "gpus": 4}}})
    assert wf.cluster.slurm.worker_processes == 4  # one worker per GPU
    wf = load({"cluster": {"slurm": {"cores": 8, "memory": "32GB"}}})
    assert wf.cluster.slurm.worker_processes == 1


def test_export_formats_match_pipeline_vectorize() -> None:
    from pipeline.vectorize import FORMATS
    from workflows.spec import EXPORT_FORMATS, Export

    vector = {k: v for k, v in EXPORT_FORMATS.items() if k != "cog"}  # cog: export_raster
    assert vector == FORMATS
    assert Export(path="{stem}.tif").resolved_format == "cog"
    assert Export(path="{stem}.qupath.geojson").resolved_format == "qupath"
    assert Export(path="{stem}.fgb").resolved_format == "flatgeobuf"
