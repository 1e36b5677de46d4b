"""Predictor input handling for model cards: uint8 inputs are rounded and saturated, and an
ONNX batch axis fixed in the file takes batches of any size."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.infer.card import parse_card
from pipeline.infer.model import describe_model
from pipeline.infer.predictor import Predictor


class Bytes(nn.Module):
    """Takes uint8 NCHW and returns its first channel as float logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.uint8
        return x[:, :1].float()


def test_uint8_input_is_rounded_and_saturated(tmp_path):
    path = tmp_path / "bytes.pt"
    torch.jit.script(Bytes()).save(str(path))
    card = parse_card({
        "input": {"layout": "NCHW", "channels": 1, "dtype": "uint8", "multiple": 1},
        "halo": 0, "output": {"layout": "NCHW", "activation": "probabilities"},
        "classes": ["value"],
    })  # fmt: skip
    info, network = describe_model(str(path), card=card)
    predictor = Predictor(network, info, device="cpu", precision="fp32")
    raw = np.array([[[[300.0, -5.0, 12.6, 254.4, 65535.0]]]], np.float32)
    out = predictor.logits(predictor.normalise(raw))
    assert out.tolist() == [[[[255.0, 0.0, 13.0, 254.0, 255.0]]]]  # not wrapped nor truncated


@pytest.mark.parametrize("fixed", [1, 2])
def test_a_batch_axis_fixed_in_an_onnx_file_takes_any_batch(tmp_path, fixed):
    pytest.importorskip("onnxruntime")
    from tests.pipeline.tinynet import TinyUNet

    net = TinyUNet(in_channels=1, classes=2, depth=2, seed=2).eval()
    path = tmp_path / f"batch{fixed}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(fixed, 1, 32, 32),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"], opset_version=17)  # fmt: skip
    card = parse_card({
        "input": {"layout": "NCHW", "channels": 1, "size": 32, "multiple": 4}, "halo": 8,
        "output": {"layout": "NCHW", "activation": "none"}, "classes": ["a", "b"],
    })  # fmt: skip
    info, network = describe_model(str(path), card=card)
    predictor = Predictor(network, info, device="cpu", precision="fp32")
    batch = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    out = predictor.logits(batch)  # 3 is not the file's batch: sliced, the last one filled up
    with torch.no_grad():
        expected = net(torch.from_numpy(batch)).numpy()
    assert out.shape == (3, 2, 32, 32) and np.abs(out - expected).max() <= 1e-4
