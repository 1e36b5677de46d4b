"""Resolving a workflow: globs, templates, collisions, existing outputs, model alignment."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError
from workflows.cli import main as cli
from workflows.plan import model_info
from workflows.run import plan


def spec(model: Path, *inputs: Any, **extra: Any) -> dict[str, Any]:
    return {"inputs": list(inputs), "model": str(model), **extra}


def test_globs_expand_in_order_with_templates(
    tiny_model: Path, geotiff_factory: Callable[..., Path], tmp_path: Path
) -> None:
    b = geotiff_factory("b.tif")
    a = geotiff_factory("a.tif")
    c = geotiff_factory("sub/c.tif")
    wf = spec(
        tiny_model,
        str(tmp_path / "data" / "*.tif"),
        {"path": str(c), "bands": [3, 2, 1]},
        output={"dir": str(tmp_path / "out" / "{workflow}"), "store": "{dir}/{index}-{stem}.zarr"},
        exports=[{"path": "{dir}/{parent}/{stem}.geojson"}, {"path": "{dir}/{name}.parquet"}],
        name="run1",
    )
    p = plan(wf, environ={})
    assert [s.source for s in p.scenes] == [a, b, c]
    assert [s.key for s in p.scenes] == ["inputs[0]", "inputs[0]", "inputs[1]"]
    out = tmp_path / "out" / "run1"
    assert p.out_dir == out
    assert p.report == out / "gigaseg-report.json"
    assert p.scenes[2].store == out / "2-c.zarr"
    assert p.scenes[2].exports == (
        (out / "sub" / "c.geojson", "geojson"),
        (out / "c.tif.parquet", "geoparquet"),
    )
    assert p.scenes[2].bands == (3, 2, 1)
    assert p.scenes[0].bands is None  # the checkpoint's bands apply
    assert p.scenes[0].shape == (64, 80)
    assert p.scenes[0].tiles(32) == 6
    assert p.model.alignment == 4
    assert p.model.halo == 24


def test_relative_paths_start_at_root_relative_to_the_file(
    tiny_model: Path, geotiff_factory: Callable[..., Path], tmp_path: Path, write_workflow: Any
) -> None:
    geotiff_factory("a.tif")
    (tmp_path / "conf").mkdir()
    path = write_workflow(
        {"root": "..", "inputs": ["data/a.tif"], "model": str(tiny_model)}, "conf/wf.yaml"
    )
    p = plan(path, environ={})
    assert p.base == tmp_path
    assert p.scenes[0].source == tmp_path / "data" / "a.tif"
    assert p.scenes[0].store == tmp_path / "out" / "a.zarr"
    assert p.name == "wf"


@pytest.mark.parametrize(
    ("size", "message"),
    [
        (1000, r"tiling\.tile: must be a multiple of 16, got 1000 \(16 is the model's alignment"),
        (8, r"tiling\.tile: must be a multiple of 16, got 8 .*use 16\)"),
    ],
)
def test_tile_must_match_the_model_alignment(
    deep_model: Path, geotiff_factory: Callable[..., Path], size: int, message: str
) -> None:
    scene = geotiff_factory()
    with pytest.raises(ConfigError, match=message):
        plan(spec(deep_model, str(scene), tiling={"tile": size}), environ={})
    with pytest.raises(ConfigError, match=r"tiling\.patch: must be a multiple of 16, got 40"):
        plan(spec(deep_model, str(scene), tiling={"tile": 64, "patch": 40}), environ={})
    assert plan(spec(deep_model, str(scene), tiling={"tile": 64}), environ={}).model.alignment == 16


def test_missing_inputs_and_empty_globs(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"inputs\[0\]\.path: no such file nope\.tif"):
        plan(spec(tiny_model, "nope.tif"), environ={})
    with pytest.raises(ConfigError, match=r"inputs\[0\]\.path: glob '.*\*\.tif' matches no files"):
        plan(spec(tiny_model, str(tmp_path / "*.tif")), environ={})


def test_missing_and_bad_models(geotiff_factory: Callable[..., Path], tmp_path: Path) -> None:
    scene = geotiff_factory()
    with pytest.raises(ConfigError, match=r"model: no such file .*none\.safetensors"):
        plan(spec(tmp_path / "none.safetensors", str(scene)), environ={})
    fake = tmp_path / "pickle.safetensors"
    fake.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))
    with pytest.raises(ConfigError, match=r"model: .*pickle-based PyTorch checkpoint"):
        plan(spec(fake, str(scene)), environ={})


def test_duplicate_inputs(tiny_model: Path, geotiff_factory: Callable[..., Path]) -> None:
    scene = geotiff_factory("a.tif")
    with pytest.raises(ConfigError, match=r"inputs\[1\]\.path: .*a\.tif is already in inputs\[0\]"):
        plan(spec(tiny_model, str(scene), str(scene)), environ={})


def test_colliding_outputs(
    tiny_model: Path, geotiff_factory: Callable[..., Path], tmp_path: Path
) -> None:
    one = geotiff_factory("x/scene.tif")
    two = geotiff_factory("y/scene.tif")
    with pytest.raises(
        ConfigError,
        match=r"output\.store: inputs\[1\] \(\S*y/scene\.tif\) and output\.store of inputs\[0\] "
        r"\(\S*x/scene\.tif\) both write .*scene\.zarr; add \{parent\} or \{index\}",
    ):
        plan(spec(tiny_model, str(one), str(two), output={"dir": str(tmp_path / "o")}), environ={})
    # {parent} separates them.
    ok = plan(
        spec(tiny_model, str(one), str(two), output={"store": "{dir}/{parent}_{stem}.zarr"}),
        environ={},
    )
    assert [s.store.name for s in ok.scenes] == ["x_scene.zarr", "y_scene.zarr"]
    with pytest.raises(ConfigError, match=r"exports\[1\]\.path: .*both write .*a\.geojson"):
        plan(
            spec(
                tiny_model,
                str(one),
                exports=[{"path": "{dir}/a.geojson"}, {"path": "{dir}/a.geojson"}],
            ),
            environ={},
        )
    with pytest.raises(ConfigError, match=r"output\.store: .*would overwrite input inputs\[0\]"):
        plan(spec(tiny_model, str(one), output={"store": str(one)}), environ={})


def test_existing_outputs_need_resume_or_overwrite(
    tiny_model: Path, geotiff_factory: Callable[..., Path], tmp_path: Path
) -> None:
    scene = geotiff_factory("a.tif")
    wf = spec(tiny_model, str(scene), output={"dir": str(tmp_path / "out")})
    (tmp_path / "out" / "a.zarr").mkdir(parents=True)
    with pytest.raises(
        ConfigError,
        match=r"output\.store: .*a\.zarr exists; pass --resume to continue the run or --overwrite",
    ):
        plan(wf, environ={})
    assert plan(wf, resume=True, environ={}).scenes[0].store.exists()
    assert plan(wf, overwrite=True, environ={}).scenes[0].store.exists()


def test_bands_are_checked_against_the_model_and_the_file(
    tiny_model: Path, geotiff_factory: Callable[..., Path]
) -> None:
    pan = geotiff_factory("pan.tif", bands=1)
    with pytest.raises(ConfigError, match=r"read\.bands: .*band"):
        plan(spec(tiny_model, str(pan)), environ={})  # the checkpoint asks for bands 1, 2, 3
    assert plan(spec(tiny_model, {"path": str(pan), "bands": [1, 1, 1]}), environ={}).scenes
    rgb = geotiff_factory("rgb.tif")
    with pytest.raises(
        ConfigError, match=r"inputs\[0\]\.bands: the model takes 3 bands but rgb\.tif gives 2"
    ):
        plan(spec(tiny_model, {"path": str(rgb), "bands": [1, 2]}), environ={})
    with pytest.raises(ConfigError, match=r"inputs\[0\]\.bands: .*4"):
        plan(spec(tiny_model, {"path": str(rgb), "bands": [1, 2, 4]}), environ={})


def test_per_input_level_and_mpp_override_read(tiny_model: Path) -> None:
    slide = Path(__file__).parents[1] / "data" / "wsi" / "CMU-1-Small-Region.svs"
    wf = spec(tiny_model, {"path": str(slide), "mpp": 1.0}, read={"level": 0})
    p = plan(wf, environ={})
    assert (p.scenes[0].level, p.scenes[0].mpp) == (None, 1.0)
    wf["inputs"] = [str(slide)]
    p = plan(wf, environ={})
    assert (p.scenes[0].level, p.scenes[0].mpp) == (0, None)
    assert p.scenes[0].shape == (2967, 2220)


def test_model_info_without_header(tmp_path: Path) -> None:
    info = model_info(tmp_path / "model.onnx")
    assert (info.kind, info.alignment) == ("onnx", None)
    assert model_info(tmp_path / "model.pt").kind == "torchscript"


def test_cli_prints_one_line_and_exits_1(
    deep_model: Path,
    geotiff_factory: Callable[..., Path],
    write_workflow: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scene = geotiff_factory()
    path = write_workflow(spec(deep_model, str(scene), tiling={"tile": 1000}))
    assert cli(["run", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gigaseg run: error: ")
    assert "tiling.tile: must be a multiple of 16, got 1000" in err
    assert err.count("\n") == 1
    path = write_workflow(spec(deep_model, str(scene), tilng={"tile": 64}))
    assert cli(["run", str(path), "--dry-run"]) == 1
    assert "tilng: unknown key; did you mean 'tiling'?" in capsys.readouterr().err


def test_url_templates_come_from_the_url_path_however_written(
    tiny_model: Path, geotiff_factory: Callable[..., Path], tmp_path: Path, http_server: Any
) -> None:
    from tests.servers import copy_to

    scene = geotiff_factory("scene.tif")
    copy_to(http_server.root / "x", scene)
    copy_to(http_server.root, scene)
    inputs = [http_server.url("x/scene.tif") + "?X-Amz-Signature=abc", http_server.url("scene.tif")]
    inputs += ["/vsicurl/" + url for url in inputs]
    output = {"dir": str(tmp_path / "out"), "store": "{dir}/{index}-{parent}-{stem}.zarr"}
    p = plan(spec(tiny_model, *inputs, output=output), environ={})
    # a file at the server's root has no parent folder, not "127.0.0.1:PORT"
    names = [s.store.name for s in p.scenes]
    assert names == ["0-x-scene.zarr", "1--scene.zarr", "2-x-scene.zarr", "3--scene.zarr"]
