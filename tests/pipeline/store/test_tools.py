"""The store opens in the tools users have: xarray, rioxarray, GDAL (via rasterio), ome-zarr.

Stores are made by ``pipeline.predict`` from the real sample GeoTIFF (UTM, uint16) and the
real Aperio slide in tests/data, with a tiny random U-Net, pinned to fp32.
"""

import doctest
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

import pipeline.store
from pipeline.predict import predict
from pipeline.store import cf, encoding, layout, pyramid, resume, zarr_store
from tests.pipeline.tinynet import TinyUNet, save_torchscript

ROOT = Path(__file__).parents[3]
SAMPLE = ROOT / "sample" / "sample_geotiff.tif"
SLIDE = ROOT / "tests" / "data" / "wsi" / "CMU-1-Small-Region.svs"

# rioxarray 0.19 multiplies Affine objects with `*`, which affine 3 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul instead:PendingDeprecationWarning")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stores")
    one_band = save_torchscript(TinyUNet(in_channels=1, seed=3), folder / "one.pt")
    three = save_torchscript(TinyUNet(classes=3, seed=4), folder / "three.pt")
    options = {"workers": 0, "progress": False, "precision": "fp32", "tile": 256}
    predict(SAMPLE, one_band, folder / "sample.zarr", **options)
    predict(SAMPLE, one_band, folder / "half.zarr", probabilities="float16", **options)
    predict(SLIDE, three, folder / "slide.zarr", mpp=0.499 * 8, **{**options, "tile": 128})
    return {n: folder / f"{n}.zarr" for n in ("sample", "half", "slide")}


def _raw(store, name):
    group = pipeline.store.open_group(store)
    return np.asarray(group[name][...])


def test_xarray_and_rioxarray_report_the_source_crs_and_transform(stores):
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr

    ds = xr.open_zarr(stores["sample"])
    assert ds["labels"].dims == ("y", "x")
    assert ds["probabilities"].dims == ("class", "y", "x")
    assert ds["tiles"].dims == ("tile_row", "tile_col")
    with rasterio.open(SAMPLE) as source:
        assert ds["labels"].rio.crs == source.crs
        assert ds["probabilities"].rio.crs == source.crs
        assert ds["labels"].rio.transform() == source.transform
        assert ds.rio.transform() == source.transform
        assert (ds.sizes["y"], ds.sizes["x"]) == source.shape
    labels = _raw(stores["sample"], "labels")
    stored = _raw(stores["sample"], "probabilities")
    assert 0 < labels.mean() < 1  # a real mix of classes, not an empty store
    np.testing.assert_array_equal(ds["labels"].values, labels)
    # uint8 p*255 carries scale_factor 1/255: xarray hands back the probabilities
    np.testing.assert_allclose(ds["probabilities"].values, stored / 255.0, atol=1e-7)
    classes = pipeline.store.read_attrs(stores["sample"])["classes"]
    assert ds["labels"].attrs["flag_meanings"] == f"background {classes[0]}"
    assert ds["labels"].dtype == np.uint8 and ds["labels"].rio.nodata == 255


def test_rioxarray_writes_the_labels_with_their_georeference_and_nodata(stores, tmp_path):
    import rioxarray  # noqa: F401
    import xarray as xr

    ds = xr.open_zarr(stores["sample"])
    ds["labels"].rio.to_raster(tmp_path / "labels.tif")
    with rasterio.open(tmp_path / "labels.tif") as out, rasterio.open(SAMPLE) as source:
        assert out.crs == source.crs and out.transform == source.transform
        assert out.nodata == 255
        np.testing.assert_array_equal(out.read(1), _raw(stores["sample"], "labels"))


def test_gdal_reads_labels_and_probabilities_with_the_georeference(stores):
    version = tuple(int(v) for v in rasterio.__gdal_version__.split(".")[:2])
    assert version >= (3, 10)  # the version the store's codec choice was tested with
    with rasterio.open(SAMPLE) as source:
        crs, transform = source.crs, source.transform
    for name in ("labels", "probabilities"):
        with rasterio.open(f'ZARR:"{stores["sample"] / name}"') as ds:
            assert ds.driver == "Zarr"
            assert ds.crs == crs and ds.transform == transform
            values = ds.read()
        np.testing.assert_array_equal(values.reshape(_raw(stores["sample"], name).shape),
                                      _raw(stores["sample"], name))  # fmt: skip


def test_gdal_sees_the_store_nodata_not_the_zarr_fill(stores):
    """Background (label 0) and p = 0 are data in GDAL (QGIS draws them); 255 / NaN are not."""
    labels = _raw(stores["sample"], "labels")
    assert (labels == 0).any()
    with rasterio.open(f'ZARR:"{stores["sample"] / "labels"}"') as ds:
        assert ds.nodata == 255
        assert (ds.read_masks(1)[labels == 0] == 255).all()
    with rasterio.open(f'ZARR:"{stores["sample"] / "probabilities"}"') as ds:
        assert ds.nodata is None  # uint8 p*255: 0 is a probability
        assert ds.scales == (1 / 255,) and ds.offsets == (0.0,) and ds.units == ("1",)
    half = _raw(stores["half"], "probabilities")
    with rasterio.open(f'ZARR:"{stores["half"] / "probabilities"}"') as ds:
        assert np.isnan(ds.nodata)
        values = ds.read()
    assert values.dtype == np.float32  # GDAL 3.10 reads Zarr v2 float16 as float32
    np.testing.assert_array_equal(values.reshape(half.shape), half.astype(np.float32))


def test_gdal_reads_a_multi_class_probability_array(stores):
    stored = _raw(stores["slide"], "probabilities")
    assert stored.shape[0] == 3
    with rasterio.open(f'ZARR:"{stores["slide"] / "probabilities"}"') as ds:
        assert ds.count == 3  # one band per class
        np.testing.assert_array_equal(ds.read(), stored)
    with rasterio.open(f'ZARR:"{stores["slide"] / "labels"}"') as ds:
        np.testing.assert_array_equal(ds.read(1), _raw(stores["slide"], "labels"))


def test_xarray_opens_a_slide_store_with_its_tissue_mask_and_micrometre_coordinates(stores):
    import xarray as xr

    attrs = pipeline.store.read_attrs(stores["slide"])
    ds = xr.open_zarr(stores["slide"])  # the low-resolution tissue mask has its own dims
    assert ds["tissue"].dims == ("tissue_y", "tissue_x")
    assert ds["tissue"].shape != ds["labels"].shape  # a mask at its own resolution
    assert ds["labels"].dims == ("y", "x") and ds["x"].attrs["units"] == "um"
    mpp_y, mpp_x = cf.slide_mpp_yx(attrs)
    assert ds["x"].values[:2].tolist() == pytest.approx([0.5 * mpp_x, 1.5 * mpp_x])
    assert ds["y"].values[-1] == pytest.approx((ds.sizes["y"] - 0.5) * mpp_y)
    np.testing.assert_array_equal(ds["labels"].values, _raw(stores["slide"], "labels"))


def test_slide_label_pyramid_opens_in_the_ome_zarr_reader(stores):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    attrs = pipeline.store.read_attrs(stores["slide"])
    mpp = attrs["mpp"]
    location = parse_url(str(stores["slide"] / pipeline.store.PYRAMID))
    nodes = list(Reader(location)())
    assert nodes, "ome-zarr found no image in labels_pyramid"
    node = nodes[0]
    scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
    assert scales[0] == pytest.approx([mpp, mpp])
    assert all(s == pytest.approx([mpp * 2**k] * 2) for k, s in enumerate(scales))
    assert [a["unit"] for a in node.metadata["axes"]] == ["micrometer", "micrometer"]
    labels = _raw(stores["slide"], "labels")
    np.testing.assert_array_equal(np.asarray(node.data[0]), labels)
    np.testing.assert_array_equal(np.asarray(node.data[1]), labels[::2, ::2])
    assert max(node.data[-1].shape) <= pyramid.SMALLEST
    assert labels.max() >= 1  # argmax of 3 classes writes more than background


def test_pyramid_is_written_for_slides_only_and_metadata_is_consolidated(stores):
    sample = json.loads((stores["sample"] / "zarr.json").read_text())
    slide = json.loads((stores["slide"] / "zarr.json").read_text())
    assert pipeline.store.PYRAMID not in {p.name for p in stores["sample"].iterdir()}
    assert slide["attributes"]["status"] == "complete"
    members = slide["consolidated_metadata"]["metadata"]
    assert f"{pipeline.store.PYRAMID}/0" in members and "labels" in members
    assert "spatial_ref" in sample["consolidated_metadata"]["metadata"]
    assert "spatial_ref" not in members  # a slide has no CRS: micrometre x/y instead
    assert members["x"]["attributes"]["units"] == "um"


@pytest.mark.parametrize("module", [cf, encoding, layout, pyramid, resume, zarr_store])
def test_doctests(module):
    assert doctest.testmod(module).failed == 0
