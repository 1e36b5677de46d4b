"""Predictor input conversion for model cards: a uint8 model gets rounded, saturated bytes."""

import numpy as np
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
