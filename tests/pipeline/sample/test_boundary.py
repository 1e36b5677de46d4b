"""Interior / boundary / background targets from vector labels."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from pipeline.errors import ConfigError
from pipeline.sample import boundary_pixels, boundary_targets, open_image, open_labels
from tests.pipeline.sample.synthetic import ORIGIN, pixel_box, write_geojson, write_geotiff

TRANSFORM = Affine(0.5, 0, ORIGIN[0], 0, -0.5, ORIGIN[1])  # 0.5 m pixels


def test_boundary_band_is_inside_each_object_and_between_touching_ones() -> None:
    ids = np.zeros((12, 20), np.int32)
    ids[2:10, 2:10] = 1
    ids[2:10, 10:18] = 2  # touches object 1 along a whole column
    out = boundary_targets(ids, (ids > 0).astype(np.uint8), 2.0, 2)
    assert ((out > 0) == (ids > 0)).all()  # interior + boundary is exactly the objects
    assert (out[2, 2:18] == 2).all() and (out[4, 4:8] == 1).all()
    assert (out[5, 8:12] == 2).all()  # two pixels on each side of the contact
    assert (out[5, 6:8] == 1).all() and (out[5, 12:14] == 1).all()
    with pytest.raises(ValueError, match="must be positive"):
        boundary_targets(ids, ids.astype(np.uint8), 0.0, 2)


def test_vector_windows_do_not_depend_on_where_they_are_cut(tmp_path) -> None:
    image = open_image(write_geotiff(tmp_path / "i.tif", np.ones((60, 80), np.uint16),
                                     transform=TRANSFORM))  # fmt: skip
    boxes = [pixel_box(TRANSFORM, 10, 10, 30, 30), pixel_box(TRANSFORM, 10, 30, 30, 52),
             pixel_box(TRANSFORM, 35, 5, 58, 70)]  # fmt: skip
    path = write_geojson(tmp_path / "b.geojson", boxes, crs="EPSG:32616")
    width = boundary_pixels(image, 1.0)  # 1 m at 0.5 m per pixel
    assert width == 2.0
    labels = open_labels(path, image, classes=["building"], boundary=width)
    whole = labels.window(0, 0, 60, 80)
    assert set(np.unique(whole)) == {0, 1, 2}
    assert (whole[20, 28:32] == 2).all()  # the two touching boxes are kept apart
    for row, col, h, w in ((0, 0, 17, 29), (25, 33, 20, 40), (12, 27, 5, 6)):
        expected = whole[row : row + h, col : col + w]
        np.testing.assert_array_equal(labels.window(row, col, h, w), expected)


def test_boundary_needs_vector_labels_and_metres(tmp_path) -> None:
    image = open_image(write_geotiff(tmp_path / "i.tif", np.ones((20, 20), np.uint16),
                                     transform=TRANSFORM))  # fmt: skip
    raster = write_geotiff(tmp_path / "l.tif", np.ones((20, 20), np.uint8), transform=TRANSFORM)
    with pytest.raises(ConfigError, match="boundary targets need vector labels"):
        open_labels(raster, image, classes=["building"], boundary=2.0)
    degrees = Affine(1e-5, 0, -84, 0, -1e-5, 33)
    tif = write_geotiff(tmp_path / "g.tif", np.ones((20, 20), np.uint16), crs="EPSG:4326",
                        transform=degrees)  # fmt: skip
    geographic = open_image(tif)
    with pytest.raises(ConfigError, match="geographic coordinates"):
        boundary_pixels(geographic, 1.0)
