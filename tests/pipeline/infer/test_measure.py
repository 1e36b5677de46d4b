"""Halo by perturbation: the measured halo makes tiled output equal the whole image."""

import logging

import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.infer import predict_tile, reference_predict
from pipeline.infer.measure import measure_halo
from pipeline.read.array import ArraySource
from pipeline.tile import InputSizes, TileGrid
from tests.pipeline.tinynet import TinyUNet


def _forward(net):
    def forward(batch):
        with torch.no_grad():
            return net(torch.from_numpy(np.asarray(batch, np.float32))).numpy()

    return forward


@pytest.mark.parametrize("depth", [2])
def test_measured_halo_is_aligned_within_the_bound_and_exact(depth, caplog):
    net = TinyUNet(in_channels=2, classes=2, depth=depth, seed=1).eval()
    forward = _forward(net)
    with caplog.at_level(logging.WARNING, logger="gigaseg"):
        measured = measure_halo(forward, channels=2, alignment=net.alignment, model="tiny")
    assert "halo measured by perturbation" in caplog.text
    assert measured.halo % net.alignment == 0 and not measured.lower_bound
    assert 0 < measured.radius <= net.receptive_field and measured.halo <= net.halo
    # tiles with the measured halo equal the whole-image reference
    image = np.random.default_rng(2).standard_normal((2, 90, 110)).astype(np.float32)
    sizes = InputSizes(net.alignment, net.alignment)
    reference = reference_predict(forward, image, halo=net.halo, sizes=sizes)
    tile = 2 * measured.halo
    grid = TileGrid(90, 110, tile, measured.halo, net.alignment, sizes)
    tiled = np.empty_like(reference)
    for index in grid.indices():
        plan = grid.plan(*index)
        core = plan.core
        box = ArraySource(image).read(plan.read)
        tiled[:, core.row_off : core.row_stop, core.col_off : core.col_stop] = predict_tile(
            forward, box, plan, outputs=2
        )
    assert np.abs(tiled - reference).max() <= 1e-4


def test_a_probe_too_small_for_the_field_is_a_lower_bound():
    net = TinyUNet(in_channels=1, classes=1, depth=3, seed=0).eval()
    measured = measure_halo(_forward(net), channels=1, alignment=8, fixed_size=32)
    assert measured.lower_bound and measured.probe_size == 32
    assert "at least" in measured.describe("m")


def _box_filter(radius):
    """A model of any size whose receptive-field radius is ``radius`` (a box mean)."""
    from scipy import ndimage

    def forward(batch):
        size = (1, 1, 2 * radius + 1, 2 * radius + 1)
        return ndimage.uniform_filter(np.asarray(batch, np.float32), size, mode="constant")

    return forward


def test_a_field_wider_than_the_first_probe_is_measured_on_a_larger_one():
    # radius 70 reaches the border of the 128 px probe: the probe doubles until it fits
    measured = measure_halo(_box_filter(70), channels=1, alignment=8)
    assert measured.radius == 70 and measured.halo == 72
    assert measured.probe_size == 256 and not measured.lower_bound


def test_a_model_without_a_local_field_is_refused():
    # instance normalisation: every output depends on the whole input
    def forward(batch):
        return batch - batch.mean(axis=(2, 3), keepdims=True)

    with pytest.raises(ConfigError, match=r"model inorm\.onnx: halo: measure found no edge .* "
                       r"up to 512px .* give halo: N"):  # fmt: skip
        measure_halo(forward, channels=2, alignment=4, limit=512, model="inorm.onnx")
