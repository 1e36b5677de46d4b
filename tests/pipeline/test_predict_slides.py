"""pipeline.predict on slides: float32 store == whole-level inference at levels > 0 with
fractional downsamples (a synthetic pyramid and the real Aperio slide's pixels), tissue masks
(auto polarity, user files), stain normalisation and resolution matching."""

import json

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from pipeline.errors import ConfigError
from pipeline.infer import Predictor, describe_model, reference_predict
from pipeline.predict import predict
from pipeline.read.stain import StainFit, StainNormalizer
from tests.pipeline.read.slides import (
    brightfield,
    fluorescence,
    real_aperio_pyramid,
    textured,
    write_svs,
)
from tests.pipeline.tinynet import TinyUNet, save_torchscript


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_torchscript(TinyUNet(seed=5), tmp_path_factory.mktemp("m") / "tiny.pt")


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slides")
    return {
        "synthetic": write_svs(folder / "odd.svs", textured(1001, 1203, seed=1), tile=128),
        "aperio": real_aperio_pyramid(folder / "aperio.svs"),
    }


def _whole_level(model_path, slide, level):
    with tifffile.TiffFile(slide) as tiff:
        image = np.moveaxis(tiff.series[0].levels[level].asarray(), -1, 0)
    info, net = describe_model(str(model_path))
    forward = Predictor(net, info, precision="fp32")
    return reference_predict(forward, image, halo=info.halo, sizes=info.sizes, padding=info.padding)


@pytest.mark.parametrize(("name", "level"), [("synthetic", 1), ("synthetic", 2), ("aperio", 2)])
def test_tiled_level_equals_whole_level(tmp_path, model, slides, name, level):
    store = tmp_path / "s.zarr"
    report = predict(
        slides[name],
        model,
        store,
        level=level,
        tile=160,
        workers=0,
        precision="fp32",
        probabilities="float32",
        tissue="off",
        progress=False,
    )
    assert report.tiles_computed == report.tiles_total >= 4
    group = zarr.open_group(str(store), mode="r")
    stored = group["probabilities"][...]
    expected = _whole_level(model, slides[name], level)
    assert stored.shape == expected.shape
    assert float(np.abs(stored - expected).max()) <= 1e-4
    attrs = dict(group.attrs)
    dx, dy = attrs["downsample_xy"]
    height0, width0 = attrs["level0_shape"]
    assert (round(height0 / dy), round(width0 / dx)) == expected.shape[1:]
    assert dx != int(dx) or dy != int(dy)  # a fractional downsample was exercised


# -- tissue ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tissue_slides(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tissue")
    bright, bright_mask = brightfield(400, 520, seed=4)
    dark, dark_mask = fluorescence(400, 520, seed=5)
    return {
        "brightfield": (write_svs(folder / "he.svs", bright, levels=2, tile=128), bright_mask),
        "fluorescence": (write_svs(folder / "if.svs", dark, levels=2, tile=128), dark_mask),
    }


def _tiles_touching(truth, tile, margin):
    rows, cols = -(-truth.shape[0] // tile), -(-truth.shape[1] // tile)
    out = np.zeros((rows, cols), bool)
    for r in range(rows):
        for c in range(cols):
            r0, c0 = max(0, r * tile - margin), max(0, c * tile - margin)
            out[r, c] = truth[r0 : (r + 1) * tile + margin, c0 : (c + 1) * tile + margin].any()
    return out


@pytest.mark.parametrize("kind", ["brightfield", "fluorescence"])
def test_auto_tissue_skips_the_right_tiles(tmp_path, model, tissue_slides, kind):
    path, truth = tissue_slides[kind]
    store = tmp_path / "t.zarr"
    report = predict(path, model, store, tile=64, workers=0, precision="fp32", progress=False)
    group = zarr.open_group(str(store), mode="r")
    ledger = group["tiles"][...]
    attrs = dict(group.attrs)
    assert attrs["tissue"]["polarity"] == kind and attrs["tissue"]["mode"] == "auto"
    assert any(kind in note for note in report.notes)
    halo = attrs["halo"]
    computed = ledger == 1
    # every tile whose core + halo touches tissue ran; the tiles far from tissue were skipped
    assert computed[_tiles_touching(truth, 64, halo)].all()
    far = ~_tiles_touching(truth, 64, halo + 8)  # the mask is at full resolution here
    assert far.any() and not computed[far].any()
    assert report.tiles_skipped == int((ledger == 2).sum()) > 0
    recorded = group["tissue"][...]
    assert recorded.shape == tuple(np.round(np.array(truth.shape) / attrs["tissue"]["scale"]))
    assert recorded.dtype == np.uint8 and 0 < recorded.mean() < 1


def test_user_tissue_file_is_honoured(tmp_path, model, tissue_slides):
    path, _ = tissue_slides["brightfield"]
    corner = [[0, 0], [100, 0], [100, 60], [0, 60], [0, 0]]
    file = tmp_path / "roi.geojson"
    file.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {"type": "Polygon", "coordinates": [corner]},
                    }
                ],
            }
        )
    )
    store = tmp_path / "roi.zarr"
    report = predict(
        path, model, store, tile=64, workers=0, tissue=str(file), precision="fp32", progress=False
    )
    group = zarr.open_group(str(store), mode="r")
    ledger = group["tiles"][...]
    halo = group.attrs["halo"]
    reach_rows = -(-(60 + halo + 16) // 64)  # a mask pixel of slack (16 px) on each side
    reach_cols = -(-(100 + halo + 16) // 64)
    assert ledger[0, 0] == 1 and (ledger[:reach_rows, :reach_cols] >= 1).all()
    assert (ledger[reach_rows:] == 2).all() and (ledger[:, reach_cols:] == 2).all()
    assert group.attrs["tissue"]["file"] == str(file)
    assert report.tiles_computed <= reach_rows * reach_cols


def test_tissue_option_on_a_geotiff_is_refused(tmp_path, model):
    from tests.pipeline.read.synthetic import write_geotiff, xy_image

    tif = write_geotiff(tmp_path / "g.tif", xy_image(3, 64, 64))
    with pytest.raises(ConfigError, match="--tissue off applies to slides") as refused:
        predict(tif, model, tmp_path / "g.zarr", tile=64, workers=0, tissue="off", progress=False)
    assert "--level 0" not in str(refused.value)  # georeferenced: not a slide


def test_slide_options_on_a_plain_tiff_say_how_to_read_it_as_a_slide(tmp_path, model):
    # one level, no georeferencing, no slide metadata: read as a raster unless asked
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, textured(96, 128), photometric="rgb", tile=(64, 64))
    hint = "to read this TIFF as a slide, add --level 0"
    for option in ({"tissue": "fluorescence"}, {"stain": "macenko"}):
        with pytest.raises(ConfigError, match=hint):
            predict(plain, model, tmp_path / "p.zarr", tile=64, workers=0, progress=False,
                    **option)  # fmt: skip
    report = predict(plain, model, tmp_path / "p.zarr", level=0, tile=64, workers=0,
                     tissue="off", progress=False)  # fmt: skip
    assert report.tiles_computed == report.tiles_total == 4  # 96 x 128 in 64 px tiles


# -- stain -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_stain_tiled_equals_whole_with_the_fitted_parameters(
    tmp_path, model, tissue_slides, method
):
    path, _ = tissue_slides["brightfield"]
    target = None
    if method == "reinhard":
        target = tmp_path / "ref.png"
        ref, _ = brightfield(120, 160, seed=9)
        Image.fromarray((ref * np.array([0.9, 1.0, 0.95])).astype(np.uint8)).save(target)
    store = tmp_path / "stain.zarr"
    predict(
        path,
        model,
        store,
        level=1,
        tile=96,
        workers=0,
        precision="fp32",
        probabilities="float32",
        tissue="off",
        stain=method,
        stain_target=target,
        progress=False,
    )
    group = zarr.open_group(str(store), mode="r")
    record = group.attrs["stain"]
    assert record["method"] == method
    normalise = StainNormalizer(
        StainFit.from_dict(record["fitted"]), StainFit.from_dict(record["target"])
    )
    with tifffile.TiffFile(path) as tiff:
        level = np.moveaxis(tiff.series[0].levels[1].asarray(), -1, 0)
    normalised = normalise(level)
    assert np.abs(normalised.astype(int) - level).mean() > 1  # it did change the colours
    info, net = describe_model(str(model))
    forward = Predictor(net, info, precision="fp32")
    expected = reference_predict(forward, normalised, halo=info.halo, sizes=info.sizes)
    assert float(np.abs(group["probabilities"][...] - expected).max()) <= 1e-4


def test_stain_needs_a_slide_and_a_method(tmp_path, model, tissue_slides):
    path, _ = tissue_slides["brightfield"]
    with pytest.raises(ConfigError, match="stain 'lab' is not one of none, macenko, reinhard"):
        predict(path, model, tmp_path / "x.zarr", tile=64, workers=0, stain="lab", progress=False)
    with pytest.raises(ConfigError, match="reinhard needs a target"):
        predict(
            path, model, tmp_path / "y.zarr", tile=64, workers=0, stain="reinhard", progress=False
        )
    assert not (tmp_path / "x.zarr").exists() and not (tmp_path / "y.zarr").exists()


# -- resolution --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sized_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sized")
    return {
        size: save_torchscript(TinyUNet(seed=5), folder / f"m{size}.pt", pixel_size=size)
        for size in (1.0, 0.75, 0.5)
    }


def test_model_pixel_size_picks_the_slide_level(tmp_path, sized_models):
    slide = write_svs(tmp_path / "small.svs", textured(301, 403, seed=6), levels=2, tile=64)
    report = predict(
        slide,
        sized_models[1.0],
        tmp_path / "a.zarr",
        tile=128,
        workers=0,
        tissue="off",
        progress=False,
    )
    attrs = dict(zarr.open_group(str(tmp_path / "a.zarr"), mode="r").attrs)
    assert attrs["level"] == 1 and attrs["mpp"] == pytest.approx(0.499 * 403 / 201)
    assert any("model pixel size 1 µm: reading" in n and "at level 1" in n for n in report.notes)
    report = predict(
        slide,
        sized_models[0.75],
        tmp_path / "b.zarr",
        tile=128,
        workers=0,
        tissue="off",
        progress=False,
    )
    attrs = dict(zarr.open_group(str(tmp_path / "b.zarr"), mode="r").attrs)
    assert attrs["level"] == 0 and attrs["mpp"] == pytest.approx(0.75)
    assert any("resampled 1.5" in n for n in report.notes)
    # an explicit level wins over the model's pixel size
    predict(
        slide,
        sized_models[1.0],
        tmp_path / "c.zarr",
        level=0,
        tile=128,
        workers=0,
        tissue="off",
        progress=False,
    )
    assert zarr.open_group(str(tmp_path / "c.zarr"), mode="r").attrs["level"] == 0


def test_geotiff_resolution_warns_or_refuses(tmp_path, sized_models):
    from tests.pipeline.read.synthetic import write_geotiff, xy_image

    tif = write_geotiff(tmp_path / "ten_metre.tif", xy_image(3, 64, 64))  # 10 m pixels
    report = predict(
        tif, sized_models[0.5], tmp_path / "g.zarr", tile=64, workers=0, progress=False
    )
    assert any(n.startswith("warning: ") and "20.0x coarser" in n for n in report.notes)
    with pytest.raises(ConfigError, match=r"20.0x coarser.*refused: --strict"):
        predict(
            tif,
            sized_models[0.5],
            tmp_path / "h.zarr",
            tile=64,
            workers=0,
            strict=True,
            progress=False,
        )
    assert not (tmp_path / "h.zarr").exists()
