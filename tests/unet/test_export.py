"""Exported TorchScript and ONNX models give the original's outputs and carry its metadata."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import unet
from unet import UNet
from workflows.cli import main


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(3)
    path = tmp_path / "m.safetensors"
    unet.save(UNet(3, 2, base=4, depth=3), path, classes=["bg", "building"], mean=[1, 2, 3])
    return path


def _inputs() -> torch.Tensor:
    torch.manual_seed(4)
    return torch.randn(2, 3, 40, 72)  # not the size used for tracing


def test_torchscript_matches(checkpoint: Path, tmp_path: Path) -> None:
    model, meta = unet.load(checkpoint)
    out = unet.export(model, meta, tmp_path / "m.ts", format="torchscript")
    extra = {"gigaseg.json": ""}
    scripted = torch.jit.load(str(out), _extra_files=extra)
    with torch.no_grad():
        diff = (scripted(_inputs()) - model(_inputs())).abs().max().item()
    assert diff <= 1e-4
    assert json.loads(extra["gigaseg.json"])["classes"] == ["bg", "building"]
    assert zipfile.is_zipfile(out)


def test_onnx_matches(checkpoint: Path, tmp_path: Path) -> None:
    import onnx
    import onnxruntime

    model, meta = unet.load(checkpoint)
    out = unet.export(model, meta, tmp_path / "m.onnx", format="onnx")
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (result,) = session.run(None, {"image": _inputs().numpy()})
    with torch.no_grad():
        expected = model(_inputs()).numpy()
    assert np.abs(result - expected).max() <= 1e-4
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["gigaseg"])["mean"] == [1.0, 2.0, 3.0]


def test_cli_export_model(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.onnx"
    assert main(["export-model", str(checkpoint), "--format", "onnx", "--out", str(out)]) == 0
    assert out.exists() and "wrote onnx model" in capsys.readouterr().out
    # refuses to overwrite without --overwrite, leaving the file intact
    before = out.stat().st_mtime_ns
    assert main(["export-model", str(checkpoint), "--format", "onnx", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "exists; pass --overwrite" in err and len(err.strip().splitlines()) == 1
    assert out.stat().st_mtime_ns == before
    assert (
        main(
            ["export-model", str(checkpoint), "--format", "onnx", "--out", str(out), "--overwrite"]
        )
        == 0
    )


def test_cli_export_model_refuses_pickle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pt = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(1)}, pt)
    code = main(
        ["export-model", str(pt), "--format", "torchscript", "--out", str(tmp_path / "x.ts")]
    )
    assert code == 1
    assert "never unpickles" in capsys.readouterr().err
    assert not (tmp_path / "x.ts").exists()
