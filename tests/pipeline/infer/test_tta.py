"""Test-time augmentation: tiled TTA equals TTA on the whole (mirror-padded) image."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from pipeline.errors import ConfigError
from pipeline.infer import Predictor, describe_model, parse_tta, reference_predict, with_tta
from pipeline.predict import predict
from tests.pipeline.tinynet import TinyUNet, save_torchscript


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tta-models")
    return {
        "same": save_torchscript(TinyUNet(padding="same", seed=0), folder / "same.pt"),
        "valid": save_torchscript(TinyUNet(padding="valid", seed=1), folder / "valid.pt"),
        "deep": save_torchscript(
            TinyUNet(padding="same", depth=3, classes=3, seed=2), folder / "deep.pt"
        ),
    }


def _image(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (3, rows, cols)).astype(np.uint8)


def _reference(path, image, tta):
    info, net = describe_model(str(path))
    forward = with_tta(Predictor(net, info, precision="fp32"), tta)
    return reference_predict(forward, image, halo=info.halo, sizes=info.sizes, padding=info.padding)


CASES = [
    # (name, rows, cols, model, tile, patch)
    ("37x53", 37, 53, "same", 32, None),
    ("odd-patches", 75, 61, "same", 32, 16),
    ("37x53-deep", 37, 53, "deep", 64, None),
    ("valid-odd", 45, 39, "valid", 32, None),
]


@pytest.mark.parametrize("tta", [2, 4, 8])
@pytest.mark.parametrize(("name", "rows", "cols", "kind", "tile", "patch"), CASES,
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_tiled_tta_equals_whole_image_tta(tmp_path, models, tta, name, rows, cols, kind, tile,
                                          patch):  # fmt: skip
    image = _image(rows, cols)
    reference = _reference(models[kind], image, tta)
    predict(image, models[kind], tmp_path / "out.zarr", tile=tile, patch=patch, workers=0,
            probabilities="float32", precision="fp32", tta=tta, progress=False)  # fmt: skip
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    probs = group["probabilities"][...]
    assert probs.shape == reference.shape
    assert np.abs(probs - reference).max() <= 1e-4
    assert group.attrs["tta"] == tta
    # the augmentation is real: averaging transforms changes the output
    plain = _reference(models[kind], image, 1)
    assert np.abs(plain - reference).max() > 1e-3


def test_transforms_are_inverted_exactly():
    rng = np.random.default_rng(1)
    batch = rng.random((2, 3, 5, 7)).astype(np.float32)
    for count in (1, 2, 4, 8):
        np.testing.assert_allclose(with_tta(lambda x: x.copy(), count)(batch), batch, rtol=1e-6)
    # 8 transforms of a position-sensitive map average to its dihedral mean (square input)
    square = rng.random((1, 1, 6, 6)).astype(np.float32)
    out = with_tta(lambda x: x * np.arange(6, dtype=np.float32), 8)(square)
    assert out.shape == square.shape and not np.allclose(out, square * np.arange(6))


def test_bad_tta_counts(tmp_path, models):
    assert parse_tta("8") == 8
    with pytest.raises(ConfigError, match="tta must be one of 1, 2, 4, 8"):
        parse_tta(3)
    with pytest.raises(ConfigError, match="tta must be one of"):
        predict(_image(16, 16), models["same"], tmp_path / "x.zarr", tta=6, workers=0,
                progress=False)  # fmt: skip
