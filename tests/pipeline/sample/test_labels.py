import sqlite3
import struct
from pathlib import Path

import numpy as np
import pytest
import shapely
from affine import Affine

from pipeline.errors import ConfigError, InputError
from pipeline.sample import (
    IGNORE,
    open_image,
    open_labels,
    open_scene,
    rasterize_window,
    read_vectors,
)
from tests.pipeline.sample.synthetic import (
    ORIGIN,
    pixel_box,
    to_lonlat,
    write_geojson,
    write_geotiff,
)

TRANSFORM = Affine(0.5, 0, ORIGIN[0], 0, -0.5, ORIGIN[1])  # 0.5 m, like the SpaceNet chip


@pytest.fixture
def utm_image(tmp_path):
    return open_image(
        write_geotiff(tmp_path / "utm.tif", np.ones((80, 100), np.uint16), transform=TRANSFORM)
    )


def test_lonlat_labels_land_on_the_right_utm_pixels(tmp_path, utm_image):
    footprint = pixel_box(TRANSFORM, 12, 30, 40, 47) | pixel_box(TRANSFORM, 40, 30, 50, 35)  # an L
    lonlat = to_lonlat(footprint)
    assert abs(lonlat.centroid.x + 84.48) < 0.01  # really degrees (Atlanta: -84.48, 33.64)
    path = write_geojson(tmp_path / "lonlat.geojson", [lonlat], crs=None)  # RFC 7946: EPSG:4326
    labels = open_labels(path, utm_image, classes=["building"])
    expected = np.zeros((80, 100), np.uint8)
    expected[12:40, 30:47] = 1
    expected[40:50, 30:35] = 1
    np.testing.assert_array_equal(labels.window(0, 0, 80, 100), expected)
    # any window equals the same slice of the whole, so patches are placed right
    np.testing.assert_array_equal(labels.window(10, 25, 32, 24), expected[10:42, 25:49])
    # and the area of the burnt pixels matches the polygon reprojected back
    back = read_vectors(path).to_crs("EPSG:32616").geometries[0]
    assert expected.sum() * 0.25 == pytest.approx(back.area, rel=1e-3)


def test_labels_in_another_utm_zone_are_reprojected(tmp_path, utm_image):
    footprint = pixel_box(TRANSFORM, 5, 5, 25, 20)
    other = read_vectors(write_geojson(tmp_path / "a.geojson", [footprint])).to_crs("EPSG:32617")
    path = write_geojson(tmp_path / "b.geojson", list(other.geometries), crs="EPSG:32617")
    window = open_labels(path, utm_image, classes=["building"]).window(0, 0, 80, 100)
    rows, cols = np.nonzero(window)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (5, 24, 5, 19)


def test_lines_are_buffered_to_their_width_in_metres(tmp_path, utm_image):
    x0, y0 = TRANSFORM @ (10, 40)
    x1, _ = TRANSFORM @ (90, 40)
    road = shapely.LineString([(x0, y0), (x1, y0)])
    path = write_geojson(tmp_path / "roads.geojson", [road])
    with pytest.raises(ConfigError, match="line_width"):
        open_labels(path, utm_image, classes=["road"])
    window = open_labels(path, utm_image, classes=["road"], line_width=4.0).window(0, 0, 80, 100)
    rows, cols = np.nonzero(window)
    assert (rows.min(), rows.max()) == (36, 43)  # 4 m = 8 pixels of 0.5 m, centred on row 40
    assert (cols.min(), cols.max()) == (10, 89)  # flat caps: no extension past the ends


def test_class_property_maps_to_class_ids(tmp_path, utm_image):
    boxes = [pixel_box(TRANSFORM, 0, 0, 10, 10), pixel_box(TRANSFORM, 20, 20, 30, 30)]
    path = write_geojson(
        tmp_path / "c.geojson", boxes, properties=[{"kind": "road"}, {"kind": "building"}]
    )
    labels = open_labels(path, utm_image, classes=["building", "road"], label_property="kind")
    window = labels.window(0, 0, 80, 100)
    assert window[5, 5] == 2 and window[25, 25] == 1 and window[50, 50] == 0


def _gpkg_blob(geometry, srs_id=32616):
    # GeoPackage binary: magic, version, flags (little endian, no envelope), srs id, WKB
    return b"GP" + bytes([0, 0b00000001]) + struct.pack("<i", srs_id) + shapely.to_wkb(geometry)


def test_geopackage_labels_are_read_with_their_crs(tmp_path, utm_image):
    path = tmp_path / "labels.gpkg"
    box = pixel_box(TRANSFORM, 2, 3, 12, 9)
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT, srs_id INTEGER, organization TEXT,"
            " organization_coordsys_id INTEGER, definition TEXT)"
        )
        db.execute("INSERT INTO gpkg_spatial_ref_sys VALUES ('utm', 32616, 'EPSG', 32616, '')")
        db.execute(
            "CREATE TABLE gpkg_geometry_columns (table_name TEXT, column_name TEXT, "
            "geometry_type_name TEXT, srs_id INTEGER, z INTEGER, m INTEGER)"
        )
        db.execute("INSERT INTO gpkg_geometry_columns VALUES ('b', 'geom', 'POLYGON', 32616, 0, 0)")
        db.execute("CREATE TABLE b (fid INTEGER PRIMARY KEY, geom BLOB, kind TEXT)")
        db.execute("INSERT INTO b (geom, kind) VALUES (?, 'building')", (_gpkg_blob(box),))
    vectors = read_vectors(path, prop="kind")
    assert vectors.crs.to_epsg() == 32616 and vectors.values == ("building",)
    window = open_labels(path, utm_image, classes=["building"]).window(0, 0, 80, 100)
    assert window.sum() == 60 and window[2:12, 3:9].all()


def test_label_raster_on_the_same_grid_and_warped(tmp_path, utm_image):
    truth = np.zeros((80, 100), np.uint8)
    truth[10:30, 40:60] = 1
    truth[0, :] = 9  # nodata row
    same = write_geotiff(tmp_path / "same.tif", truth, transform=TRANSFORM, nodata=9)
    window = open_labels(same, utm_image, classes=["building"]).window(0, 0, 80, 100)
    assert (window[0] == IGNORE).all() and window[10:30, 40:60].all() and window[1:].sum() == 400
    # the same labels at 1 m on a coarser grid: warped (nearest) to the 0.5 m image grid
    coarse = np.zeros((40, 50), np.uint8)
    coarse[5:15, 20:30] = 1
    path = write_geotiff(
        tmp_path / "coarse.tif", coarse, transform=Affine(1.0, 0, ORIGIN[0], 0, -1.0, ORIGIN[1])
    )
    warped = open_labels(path, utm_image, classes=["building"])
    np.testing.assert_array_equal(warped.window(0, 0, 80, 100), np.kron(coarse, np.ones((2, 2))))
    warped.close()


def test_rasterize_window_is_pixel_centre_based():
    box = shapely.box(0.6, -2.6, 2.6, -0.6)  # holds the centres of pixels (1..2, 1..2) only
    out = rasterize_window([box], [3], Affine(1, 0, 0, 0, -1, 0), (4, 4))
    assert out.tolist() == [[0, 0, 0, 0], [0, 3, 3, 0], [0, 3, 3, 0], [0, 0, 0, 0]]
    assert rasterize_window([], [], Affine.identity(), (2, 2)).sum() == 0


def test_missing_and_unknown_label_files(tmp_path, utm_image):
    with pytest.raises(InputError, match="does not exist"):
        read_vectors(tmp_path / "missing.geojson")
    (tmp_path / "x.shp").write_text("")
    with pytest.raises(InputError, match="unknown format"):
        read_vectors(tmp_path / "x.shp")


def test_slide_windows_and_pixel_coordinate_labels(tmp_path):
    slide_path = Path(__file__).resolve().parents[2] / "data" / "wsi" / "CMU-1-Small-Region.svs"
    if not slide_path.is_file():
        pytest.skip("slide test data missing")
    box = shapely.box(100, 50, 200, 150)  # level-0 pixels (QuPath GeoJSON has no CRS)
    labels_path = write_geojson(tmp_path / "qupath.geojson", [box], crs=None)
    scene = open_scene(slide_path, labels_path, bands=(1, 2, 3))
    assert scene.image.georef.kind == "slide"
    assert (scene.image.width, scene.image.height) == (2220, 2967)
    window = scene.labels.window(40, 90, 128, 128)
    expected = np.zeros((128, 128), np.uint8)
    expected[10:110, 10:110] = 1
    np.testing.assert_array_equal(window, expected)
    pixels, valid = scene.image.read(1000, 1000, 64, 64)
    assert pixels.shape == (3, 64, 64) and pixels.dtype == np.float32 and valid.any()
    _, corner = scene.image.read(0, 0, 32, 32)  # slide background is white: not valid
    assert corner.mean() < valid.mean()
    scene.image.close()
