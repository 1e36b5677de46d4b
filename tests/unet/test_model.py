"""The U-Net family: every variant's forward pass, size rules and receptive-field claims."""

from __future__ import annotations

import itertools

import pytest
import torch

from unet import UNet, build
from unet.registry import ARCHITECTURES

VARIANTS = [
    {},
    {"norm": "none"},
    {"upsample": "bilinear"},
    {"block": "separable"},
    {"attention": True},
    {"deep_supervision": True},
    {"padding": "valid"},
    {"padding": "valid", "attention": True, "block": "separable"},
]


def _ids(variant: dict[str, object]) -> str:
    return ",".join(f"{k}={v}" for k, v in variant.items()) or "default"


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
@pytest.mark.parametrize("depth", [2, 3])
def test_forward_on_odd_sizes(variant: dict[str, object], depth: int) -> None:
    model = UNet(3, 2, base=4, depth=depth, **variant).eval()  # type: ignore[arg-type]
    for height, width in [(37, 53), (1, 1), (100, 17)]:
        h_in, w_in = model.valid_input_size(height), model.valid_input_size(width)
        with torch.no_grad():
            out = model(torch.randn(2, 3, h_in, w_in))
        assert isinstance(out, torch.Tensor)
        assert out.shape == (2, 2, model.output_size(h_in), model.output_size(w_in))
        if model.padding == "same":
            assert out.shape[-2:] == (h_in, w_in)
            assert h_in % model.alignment == 0 and h_in - height < model.alignment


def test_same_padding_rejects_unaligned_sizes_naming_nearest() -> None:
    model = UNet(3, 1, base=4, depth=3)
    with pytest.raises(ValueError, match=r"multiple of 8; nearest valid sizes: 32 or 40"):
        model(torch.randn(1, 3, 37, 40))


def test_valid_padding_rejects_bad_sizes_naming_nearest() -> None:
    model = UNet(1, 2, base=4, depth=4, padding="valid")
    assert model.output_size(572) == 388
    with pytest.raises(ValueError, match=r"nearest valid sizes: 556 or 572"):
        model.output_size(570)


def test_paper_unet_geometry() -> None:
    paper = build("paper", in_channels=1, classes=2)
    assert paper.output_size(572) == 388
    assert paper.halo == 92
    assert paper.alignment == 16


def test_deep_supervision_returns_auxiliary_maps_in_training_only() -> None:
    model = UNet(3, 2, base=4, depth=3, deep_supervision=True)
    x = torch.randn(2, 3, 32, 32)
    main, aux = model.train()(x)
    assert main.shape == (2, 2, 32, 32)
    assert len(aux) == 2 and all(a.shape == main.shape for a in aux)
    with torch.no_grad():
        out = model.eval()(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 2, 32, 32)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match=r"padding='full' is not one of 'same', 'valid'"):
        UNet(3, 1, padding="full")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"needs upsample='transpose'"):
        UNet(3, 1, padding="valid", upsample="bilinear")
    with pytest.raises(ValueError, match=r"depth must be a positive integer"):
        UNet(3, 1, depth=0)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_registry_builds(name: str) -> None:
    model = build(name, in_channels=3, classes=1, base=4)
    assert model.architecture.base == 4
    assert model.halo > 0


def _measured_radius(model: UNet) -> int:
    """Farthest output pixel changed by perturbing one input pixel, over all pooling phases.

    Weights are made positive so no ReLU can silence a path: what is measured is the
    structural reach of the layers, which is what the halo must cover.
    """
    model = model.double().eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.abs() + 0.01)
    reach = model.receptive_radius
    # room for the reach on both sides of every perturbed pixel (plus the crop of a valid net)
    crop = 2 * model.halo if model.padding == "valid" else 0
    size = model.valid_input_size(2 * reach + 2 * model.alignment + 2 + crop)
    image = torch.rand(1, model.architecture.in_channels, size, size, dtype=torch.float64)
    with torch.no_grad():
        base = model(image)
    offset = (size - base.shape[-1]) // 2  # output pixel i sits over input pixel i + offset
    worst = 0
    for phase in range(model.alignment):
        centre = size // 2 + phase
        bumped = image.clone()
        bumped[..., centre, centre] += 1.0
        with torch.no_grad():
            changed = (model(bumped) - base).abs().sum(1)[0] > 0
        where = torch.nonzero(changed) + offset - centre
        worst = max(worst, int(where.abs().max()))
    return worst


@pytest.mark.parametrize(
    "variant",
    [
        {"depth": 2},
        {"depth": 3},
        {"depth": 4},
        {"depth": 3, "upsample": "bilinear"},
        {"depth": 3, "block": "separable"},
        {"depth": 3, "attention": True},
        {"depth": 3, "padding": "valid"},
    ],
    ids=_ids,
)
def test_receptive_field_matches_impulse_response(variant: dict[str, object]) -> None:
    model = UNet(2, 2, base=2, **variant)  # type: ignore[arg-type]
    reported = model.receptive_radius
    measured = _measured_radius(model)
    assert measured <= reported, "an input pixel reached farther than the reported radius"
    assert reported - measured <= model.alignment, "the reported radius is loose"
    assert model.receptive_field == 2 * reported + 1
    if model.padding == "same":
        assert model.halo % model.alignment == 0
        assert reported <= model.halo < reported + model.alignment


def test_halo_covers_context_same_padding() -> None:
    """A window with the halo gives the same core as a window with far more context."""
    torch.manual_seed(0)
    model = UNet(1, 1, base=4, depth=3).eval()
    halo, core = model.halo, 16
    big = torch.randn(1, 1, core + 6 * halo, core + 6 * halo)
    start = 3 * halo
    small = big[..., start - halo : start + core + halo, start - halo : start + core + halo]
    with torch.no_grad():
        full = model(big)[..., start : start + core, start : start + core]
        cropped = model(small)[..., halo : halo + core, halo : halo + core]
    torch.testing.assert_close(cropped, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations([32, 48, 64], 2)))
def test_fully_convolutional_any_aligned_size(a: int, b: int) -> None:
    model = UNet(3, 1, base=4, depth=4).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, a, b)).shape == (1, 1, a, b)
