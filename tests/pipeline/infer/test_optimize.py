"""Batch-norm folding and channels_last keep the model's output (float32, <= 1e-4)."""

import numpy as np
import torch

import unet
from pipeline.infer import Predictor, describe_model
from pipeline.infer.optimize import fold_batch_norm


def _trained_like(seed):
    torch.manual_seed(seed)
    model = unet.UNet(in_channels=3, classes=2, base=8, depth=2)
    for module in model.modules():  # running statistics far from the defaults
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def test_folding_removes_every_batch_norm_and_keeps_the_output():
    model = _trained_like(0)
    folded = fold_batch_norm(model)
    count = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert count > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # a copy
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert (model(x) - folded(x)).abs().max().item() <= 1e-4


def test_training_mode_and_scripted_models_are_left_alone():
    model = _trained_like(1).train()
    assert fold_batch_norm(model) is model
    scripted = torch.jit.trace(_trained_like(1), torch.zeros(1, 3, 32, 32))
    assert fold_batch_norm(scripted) is scripted


def test_predictor_output_equals_the_plain_model(tmp_path):
    model = _trained_like(2)
    path = tmp_path / "m.safetensors"
    unet.save(model, path, classes=["a", "b"], bands=[1, 2, 3], mean=[100.0] * 3, std=[50.0] * 3)
    info, network = describe_model(str(path), loader="pipeline.predict:load_gigaseg")
    predictor = Predictor(network, info, device="cpu", precision="fp32")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in predictor.network.modules())
    raw = np.random.default_rng(0).integers(0, 256, (2, 3, 64, 64)).astype(np.uint8)
    plain, _ = unet.load(path)
    with torch.inference_mode():
        x = (torch.from_numpy(raw.astype(np.float32)) - 100.0) / 50.0
        expected = torch.softmax(plain.eval()(x), dim=1).numpy()
    assert np.abs(predictor(raw) - expected).max() <= 1e-4
