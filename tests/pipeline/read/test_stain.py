"""Stain normalisation: Macenko and Reinhard fitted once, per-pixel (tiled == whole), and a
synthetic stain-shifted copy normalised back within a stated error."""

import json

import numpy as np
import pytest

from pipeline.errors import ConfigError, InputError
from pipeline.read.stain import (
    MACENKO_REFERENCE,
    StainFit,
    StainNormalizer,
    fit_macenko,
    fit_reinhard,
    lab_to_rgb,
    load_target,
    rgb_to_lab,
)

IO = 240.0
H_VECTOR = np.array([0.5626, 0.7201, 0.4062])  # Macenko reference H&E
E_VECTOR = np.array([0.2159, 0.8012, 0.5581])


def _unit(v):
    return v / np.linalg.norm(v)


def he_image(stains, scale=(1.0, 1.0), rows=96, cols=128, seed=0):
    """Beer-Lambert H&E: concentrations from a fixed seed, composed with ``stains`` (3 x 2)."""
    rng = np.random.default_rng(seed)
    conc = np.zeros((2, rows, cols))
    r, c = np.mgrid[0:rows, 0:cols]
    nuclei = np.sin(r / 5.0) * np.cos(c / 7.0) > 0.3
    conc[0] = np.where(
        nuclei, rng.uniform(0.8, 1.6, (rows, cols)), rng.uniform(0, 0.15, (rows, cols))
    )
    conc[1] = np.where(
        nuclei, rng.uniform(0, 0.2, (rows, cols)), rng.uniform(0.3, 0.9, (rows, cols))
    )
    conc[:, :, : cols // 8] = 0  # a strip of glass
    conc *= np.asarray(scale)[:, None, None]
    od = np.tensordot(stains, conc, axes=(1, 0))
    return np.clip(np.rint(IO * np.exp(-od)), 0, 255).astype(np.uint8)


def _stains(h, e):
    return np.stack([_unit(h), _unit(e)], axis=1)


def test_macenko_recovers_the_stain_vectors():
    image = he_image(_stains(H_VECTOR, E_VECTOR))
    fit = fit_macenko(image)
    found = fit.get("stain_matrix")
    assert np.abs(found[:, 0] @ _unit(H_VECTOR)) > 0.99  # cosine similarity
    assert np.abs(found[:, 1] @ _unit(E_VECTOR)) > 0.99


def test_macenko_undoes_a_stain_shift():
    original = he_image(_stains(H_VECTOR, E_VECTOR), seed=1)
    # another lab's stain: other stain vectors, stronger haematoxylin, weaker eosin
    shifted = he_image(
        _stains(H_VECTOR + np.array([0.15, -0.1, 0.2]), E_VECTOR + np.array([0.25, -0.05, -0.05])),
        scale=(1.3, 0.7),
        seed=1,
    )
    restored = StainNormalizer(fit_macenko(shifted), fit_macenko(original))(shifted)
    before = np.abs(shifted.astype(int) - original).mean()
    after = np.abs(restored.astype(int) - original)
    # stated error: mean |difference| to the original < 1.5 grey levels, 99th percentile <= 3
    # (measured 0.63 and 2), from 18.5 before
    assert before > 15
    assert after.mean() < 1.5 and np.percentile(after, 99) <= 3


def test_reinhard_undoes_a_colour_cast():
    original = he_image(_stains(H_VECTOR, E_VECTOR), seed=3)
    tissue = np.ones(original.shape[1:], bool)
    tissue[:, : original.shape[2] // 8] = False
    lab = rgb_to_lab(original)
    cast = np.stack(
        [
            (lab[0] - 60) * 0.85 + 52,  # darker, lower contrast
            (lab[1] - 20) * 1.3 + 32,  # redder
            (lab[2] + 10) * 0.9 - 16,  # bluer
        ]
    )
    shifted = lab_to_rgb(cast)
    restored = StainNormalizer(fit_reinhard(shifted, tissue), fit_reinhard(original, tissue))(
        shifted
    )
    before = np.abs(shifted.astype(int) - original)[:, tissue].mean()
    after = np.abs(restored.astype(int) - original)[:, tissue]
    # stated error on tissue: mean |difference| < 1.5 grey levels (measured 0.07, from 16.0)
    assert before > 10
    assert after.mean() < 1.5, (before, after.mean())


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_normalisation_is_per_pixel_so_tiles_equal_whole(method):
    image = he_image(_stains(H_VECTOR, E_VECTOR), rows=130, cols=170, seed=2)
    fit = fit_macenko(image) if method == "macenko" else fit_reinhard(image)
    target = load_target(
        method, None, None if method == "macenko" else fit_reinhard(image[:, ::2]).to_dict()
    )
    normalise = StainNormalizer(fit, target)
    whole = normalise(image)
    for r, c, h, w in [(0, 0, 17, 33), (55, 61, 64, 1), (129, 3, 1, 160), (10, 20, 100, 100)]:
        assert np.array_equal(
            normalise(image[:, r : r + h, c : c + w]), whole[:, r : r + h, c : c + w]
        )


def test_lab_round_trip():
    rgb = np.random.default_rng(0).integers(0, 256, (3, 50, 60)).astype(np.uint8)
    assert np.array_equal(lab_to_rgb(rgb_to_lab(rgb)), rgb)
    white = rgb_to_lab(np.full((3, 1, 1), 255, np.uint8))[:, 0, 0]
    assert white == pytest.approx([100.0, 0.0, 0.0], abs=0.05)


def test_targets(tmp_path):
    assert load_target("macenko").to_dict() == MACENKO_REFERENCE
    assert load_target("macenko", card={"method": "macenko"}).to_dict() == MACENKO_REFERENCE
    with pytest.raises(ConfigError, match="card's stain entry: reinhard needs 'mean'"):
        load_target("reinhard", card={"method": "reinhard"})
    with pytest.raises(ConfigError, match="reinhard needs a target"):
        load_target("reinhard")
    fitted = fit_reinhard(he_image(_stains(H_VECTOR, E_VECTOR)))
    path = tmp_path / "target.json"
    path.write_text(json.dumps(fitted.to_dict()))
    assert load_target("reinhard", path) == fitted
    with pytest.raises(ConfigError, match="is a reinhard fit but --stain is macenko"):
        load_target("macenko", path)
    path.write_text(json.dumps({"method": "macenko", "stain_matrix": [[1, 2]]}))
    with pytest.raises(ConfigError, match=r"stain_matrix has shape \(1, 2\), expected \(3, 2\)"):
        load_target("macenko", path)
    with pytest.raises(ConfigError, match="method 'x' is not"):
        StainFit.from_dict({"method": "x"})


def test_blank_glass_cannot_be_fitted():
    with pytest.raises(InputError, match="too few stained pixels"):
        fit_macenko(np.full((3, 40, 40), 238, np.uint8))


def test_reinhard_leaves_the_glass_of_a_reference_image_out():
    # a reference image of the same tissue with glass around it (as a user would crop one)
    # must describe the tissue as the slide's tissue-masked fit does (issue 10)
    tissue_only = he_image(_stains(H_VECTOR, E_VECTOR), seed=5)
    reference = np.full((3, 288, 384), 236, np.uint8)
    reference[:, 96:192, 128:256] = tissue_only
    stained = ~(tissue_only >= 207).all(axis=0)
    assert 0.8 < stained.mean() < 0.9  # the image's own strip of glass is not tissue
    slide_fit = fit_reinhard(tissue_only, stained)  # as on the slide's tissue mask
    normalise = StainNormalizer(slide_fit, fit_reinhard(reference))
    change = np.abs(normalise(tissue_only).astype(int) - tissue_only)[:, stained].mean()
    assert change < 1.5, change  # about the identity (measured 0.0; 70.7 with the glass)
