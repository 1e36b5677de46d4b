"""Checkpoints: safetensors round trip, metadata, and refusal to unpickle."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch

import unet
from pipeline.errors import CheckpointError
from unet import UNet

VARIANTS = [
    {},
    {"padding": "valid", "norm": "none"},
    {"attention": True, "deep_supervision": True, "block": "separable", "upsample": "bilinear"},
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_round_trip_is_bit_identical(tmp_path: Path, variant: dict[str, object]) -> None:
    torch.manual_seed(1)
    model = UNet(3, 2, base=4, depth=3, **variant)  # type: ignore[arg-type]
    # Give batch norm non-trivial running statistics so they are proven to round-trip too.
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 3, model.valid_input_size(48), model.valid_input_size(48)))
    model.eval()
    path = tmp_path / "m.safetensors"
    saved = unet.save(
        model,
        path,
        classes=["background", "building"],
        bands=[3, 2, 1],
        mean=[10.0, 20.0, 30.0],
        std=[2.0, 3.0, 4.0],
        pixel_size=0.5,
        extra={"epochs": 3},
    )
    loaded, meta = unet.load(path)
    assert not loaded.training
    x = torch.randn(1, 3, model.valid_input_size(64), model.valid_input_size(40))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert meta == saved
    assert meta.classes == ("background", "building")
    assert meta.bands == (3, 2, 1)
    assert meta.mean == (10.0, 20.0, 30.0) and meta.std == (2.0, 3.0, 4.0)
    assert meta.pixel_size == 0.5 and meta.activation == "softmax"
    assert meta.extra == {"epochs": 3}
    assert len(meta.sha256) == 64
    assert unet.read_metadata(path) == meta


def test_sigmoid_for_one_channel(tmp_path: Path) -> None:
    meta = unet.save(UNet(1, 1, base=2, depth=2), tmp_path / "b.safetensors", classes=["building"])
    assert meta.activation == "sigmoid"
    assert meta.mean == (0.0,) and meta.std == (1.0,)


def test_save_checks_lengths(tmp_path: Path) -> None:
    model = UNet(3, 1, base=2, depth=2)
    with pytest.raises(CheckpointError, match=r"classes has 2 names but the model has 1"):
        unet.save(model, tmp_path / "x.safetensors", classes=["a", "b"])
    with pytest.raises(CheckpointError, match=r"mean has 1 values but the model takes 3"):
        unet.save(model, tmp_path / "x.safetensors", classes=["a"], mean=[0.0])
    assert not (tmp_path / "x.safetensors").exists()


class _Exploit:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (str(self.marker), "pwned"))  # type: ignore[return-value]


@pytest.mark.parametrize("kind", ["zip", "raw"])
def test_pickle_checkpoints_are_refused_without_running_them(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "ran.txt"
    path = tmp_path / "evil.pt"
    if kind == "zip":
        torch.save({"state": _Exploit(marker)}, path)  # torch's zip+pickle format
    else:
        path.write_bytes(pickle.dumps(_Exploit(marker), protocol=4))
    with pytest.raises(CheckpointError, match=r"pickle-based PyTorch checkpoint; gigaseg never"):
        unet.load(path)
    assert not marker.exists()


def test_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"does not exist"):
        unet.load(tmp_path / "nope.safetensors")
    text = tmp_path / "notes.safetensors"
    text.write_text("hello world, not weights")
    with pytest.raises(CheckpointError, match=r"is not a safetensors checkpoint"):
        unet.load(text)


def test_safetensors_without_gigaseg_header(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match=r"has no gigaseg header"):
        unet.load(path)


def test_header_weights_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    unet.save(UNet(3, 1, base=4, depth=2), path, classes=["x"])
    # Rewrite the header to claim a deeper network than the weights hold.
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    meta = json.loads(header["__metadata__"]["gigaseg"])
    meta["architecture"]["depth"] = 3
    header["__metadata__"]["gigaseg"] = json.dumps(meta)
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    path.write_bytes(struct.pack("<Q", len(body)) + body + raw[8 + size :])
    with pytest.raises(CheckpointError, match=r"weights do not match the header"):
        unet.load(path)
