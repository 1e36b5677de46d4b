"""Remote sources through real servers on 127.0.0.1: HTTP with Range, and S3 (moto).

Reads from a URL, ``s3://`` and ``/vsis3/`` equal the local file; one tile costs few requests;
a corrupt middle tile fails with one line naming the file (without credentials) and the
window; credentials never reach messages, ``describe()`` or store attributes.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.errors import InputError, ReadError
from pipeline.read import GeoTiffSource, open_source, redact, to_gdal_path
from pipeline.read.location import expand_remote, join_location, location_suffix, read_bytes
from pipeline.tile.grid import Window
from tests.servers import RangeServer, copy_to

from .synthetic import write_geotiff, xy_image

WINDOWS = [Window(0, 0, 64, 64), Window(37, 51, 70, 45), Window(-8, -8, 40, 40)]


@pytest.fixture
def scene(tmp_path):
    """A tiled, compressed 3-band GeoTIFF whose pixels encode their position."""
    return write_geotiff(tmp_path / "scene.tif", xy_image(3, 160, 192), compress="deflate")


def _same_reads(remote: GeoTiffSource, local: GeoTiffSource) -> None:
    assert remote.shape == local.shape and remote.dtype == local.dtype
    assert remote.georef == local.georef
    for window in WINDOWS:
        np.testing.assert_array_equal(remote.read(window), local.read(window))


def test_http_reads_equal_the_local_file(http_server, scene):
    copy_to(http_server.root, scene)
    url = http_server.url("scene.tif")
    _same_reads(open_source(url), open_source(scene))
    _same_reads(open_source("/vsicurl/" + url), open_source(scene))


def test_one_tile_costs_few_requests(http_server, tmp_path):
    """Header + tile index in one request at open; a 32x32 tile read is one more."""
    image = xy_image(3, 256, 256)
    path = write_geotiff(tmp_path / "cog.tif", image, compress="deflate")
    copy_to(http_server.root, path)
    source = open_source(http_server.url("cog.tif"))
    opened = sum(http_server.counter.requests.values())
    assert opened <= 4  # HEAD + header; no side-car probing (.aux.xml, .ovr, .msk)
    http_server.counter.reset()
    np.testing.assert_array_equal(source.read(Window(96, 128, 32, 32)), image[:, 96:128, 128:160])
    assert sum(http_server.counter.requests.values()) <= 2
    served = [name for name in http_server.counter.requests if not name.endswith("cog.tif")]
    assert served == []  # nothing but the file itself was asked for


def test_s3_and_vsis3_equal_the_local_file(s3_server, scene):
    url = s3_server.put("scenes-bucket", "a/scene.tif", scene)
    local = open_source(scene)
    _same_reads(open_source(url), local)
    _same_reads(open_source("/vsis3/scenes-bucket/a/scene.tif"), local)
    assert open_source(url).describe()["source"] == url


def test_s3_glob_lists_the_bucket(s3_server, scene):
    for key in ("x/one.tif", "x/two.tif", "x/notes.txt", "x/old/four.tif", "y/three.tif"):
        s3_server.put("list-bucket", key, scene)
    # the local glob rules: "*" stays in its folder, "**/" spans folders
    assert expand_remote("s3://list-bucket/x/*.tif") == [
        "s3://list-bucket/x/one.tif",
        "s3://list-bucket/x/two.tif",
    ]
    assert expand_remote("/vsis3/list-bucket/x/**/*.tif") == [
        "/vsis3/list-bucket/x/old/four.tif",
        "/vsis3/list-bucket/x/one.tif",
        "/vsis3/list-bucket/x/two.tif",
    ]
    assert expand_remote("s3://list-bucket/x/[!o]*.tif") == ["s3://list-bucket/x/two.tif"]
    assert expand_remote("s3://list-bucket/z/*.tif") == []
    assert expand_remote("https://h/x.tif") == ["https://h/x.tif"]
    with pytest.raises(InputError, match="only s3:// prefixes can be listed"):
        expand_remote("https://h/*.tif")


def test_a_public_bucket_lists_and_reads_without_credentials(s3_server, scene, monkeypatch):
    s3_server.put("public-bucket", "items/item.json", Path(__file__))
    s3_server.put("public-bucket", "scenes/a.tif", scene)
    s3_server.client.put_bucket_acl(Bucket="public-bucket", ACL="public-read")
    for key in ("items/item.json", "scenes/a.tif"):
        s3_server.client.put_object_acl(Bucket="public-bucket", Key=key, ACL="public-read")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_NO_SIGN_REQUEST", "YES")  # what GDAL takes for a public bucket
    assert read_bytes("s3://public-bucket/items/item.json") == Path(__file__).read_bytes()
    assert expand_remote("s3://public-bucket/scenes/*.tif") == ["s3://public-bucket/scenes/a.tif"]
    _same_reads(open_source("s3://public-bucket/scenes/a.tif"), open_source(scene))


def test_a_signed_url_query_is_not_a_glob():
    signed = "https://h/x.tif?X-Amz-Signature=abc&X-Amz-Credential=k%2F1"
    assert expand_remote(signed) == [signed]
    assert expand_remote("/vsicurl/" + signed) == ["/vsicurl/" + signed]
    with pytest.raises(InputError, match="only s3:// prefixes can be listed"):
        expand_remote("https://h/*.tif?X-Amz-Signature=abc")


def _corrupt_block(path, row, col):
    """Overwrite one tile of every band with garbage (the file still opens)."""
    with rasterio.open(path) as dataset:
        spans = [
            (
                int(dataset.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=band)),
                int(dataset.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=band)),
            )
            for band in dataset.indexes
        ]
    with Path(path).open("r+b") as handle:
        for offset, size in spans:
            handle.seek(offset)
            handle.write(b"\xff" * size)


def test_corrupt_middle_tile_names_file_and_window(tmp_path):
    auth_root = tmp_path / "private"
    auth_root.mkdir()
    path = write_geotiff(auth_root / "bad.tif", xy_image(3, 128, 128), compress="deflate")
    _corrupt_block(path, 2, 1)  # block row 2, col 1: pixels rows 64:96, cols 32:64
    server = RangeServer(auth_root, auth="reader:s3cret").start()
    try:
        url = f"http://reader:s3cret@127.0.0.1:{server.port}/bad.tif"
        source = open_source(url)  # first and last blocks are fine: opens
        assert "s3cret" not in source.name and "s3cret" not in str(source.describe())
        np.testing.assert_array_equal(source.read(Window(0, 0, 32, 32))[0], xy_image(1, 32, 32)[0])
        with pytest.raises(ReadError) as caught:
            source.read(Window(60, 20, 40, 40))
    finally:
        server.stop()
    message = str(caught.value)
    assert "\n" not in message and "s3cret" not in message
    assert message.startswith(f"http://127.0.0.1:{server.port}/bad.tif: cannot read window ")
    assert "rows 60:100, cols 20:60" in message
    assert "See previous exception" not in message
    assert "TIFFReadEncodedTile" in message or "Decoding error" in message  # GDAL's own words
    # a worker sends it to the client as Dask does (with its chained causes): still a ReadError
    import tblib.pickling_support
    from distributed.core import collect_causes
    from distributed.protocol.pickle import dumps, loads

    error = caught.value
    tblib.pickling_support.install(error, *collect_causes(error))  # what error_message does
    sent = loads(dumps(error))
    assert type(sent) is ReadError and str(sent) == message


def test_corrupt_tile_of_a_nodata_file_fails_validity_in_one_line(http_server):
    # with nodata, the client reads the whole file's mask before any tile (exact skipping)
    path = write_geotiff(
        http_server.root / "bad.tif", xy_image(1, 128, 128) + 1, nodata=0, compress="deflate"
    )
    _corrupt_block(path, 2, 1)
    url = http_server.url("bad.tif?X-Amz-Signature=s3cretsig&X-Amz-Date=1")
    source = open_source(url)
    with pytest.raises(ReadError) as caught:
        source.validity()
    message = str(caught.value)
    assert "\n" not in message and "s3cretsig" not in message  # GDAL names bad.tif?X-Amz-...
    assert message.startswith(f"{redact(url)}: cannot read window rows ")
    assert "to find its valid pixels" in message and "TIFFReadEncodedTile" in message
    # the overview preview draws from: the same one line
    with pytest.raises(ReadError) as caught:
        source.thumbnail(128)
    message = str(caught.value)
    assert "\n" not in message and "s3cretsig" not in message
    assert message.startswith(f"{redact(url)}: cannot read a 128x128 overview of the 128x128 ")
    assert "TIFFReadEncodedTile" in message


def test_a_server_refusing_head_says_what_to_do(tmp_path, scene, monkeypatch):
    root = tmp_path / "nohead"
    copy_to(root, scene)
    server = RangeServer(root, head=False).start()
    try:
        with pytest.raises(InputError, match="set CPL_VSIL_CURL_USE_HEAD=NO"):
            open_source(server.url("scene.tif?token=1"))
        monkeypatch.setenv("CPL_VSIL_CURL_USE_HEAD", "NO")  # what the message says
        _same_reads(open_source(server.url("scene.tif?token=2")), open_source(scene))
    finally:
        server.stop()


def test_small_files_behind_basic_auth_open_as_rasters_do(tmp_path, monkeypatch):
    """A STAC item / outline file next to its images takes the same credentials as GDAL."""
    root = tmp_path / "private"
    root.mkdir()
    (root / "item.json").write_text('{"type": "Feature"}')
    server = RangeServer(root, auth="reader:pa:ss").start()
    try:
        plain = f"http://127.0.0.1:{server.port}/item.json"
        in_url = f"http://reader:pa%3Ass@127.0.0.1:{server.port}/item.json?x=1"
        assert read_bytes(in_url) == b'{"type": "Feature"}'
        with pytest.raises(InputError) as caught:
            read_bytes(plain)
        assert "(HTTP response code: 401): the server asks for credentials" in str(caught.value)
        monkeypatch.setenv("GDAL_HTTP_USERPWD", "reader:pa:ss")
        assert read_bytes(plain) == b'{"type": "Feature"}'
        monkeypatch.delenv("GDAL_HTTP_USERPWD")
        token = base64.b64encode(b"reader:pa:ss").decode()
        monkeypatch.setenv("GDAL_HTTP_HEADERS", f"X-Trace: 1\r\nAuthorization: Basic {token}")
        assert read_bytes(plain) == b'{"type": "Feature"}'
    finally:
        server.stop()


def test_missing_remote_file_is_one_line_without_credentials(http_server):
    with pytest.raises(InputError) as caught:
        open_source(f"http://me:pw@127.0.0.1:{http_server.port}/nowhere.tif")
    message = str(caught.value)
    assert "pw@" not in message and "nowhere.tif" in message and "\n" not in message


def test_a_server_without_range_requests_is_one_line_saying_what_to_do(plain_http_server, tmp_path):
    # GDAL keeps a small file the server sends whole; a larger one needs ranges
    noise = np.random.default_rng(0).integers(0, 255, (1, 1024, 1024), dtype=np.uint8)
    big = write_geotiff(tmp_path / "plain" / "big.tif", noise)
    assert big.stat().st_size > 1_000_000
    with pytest.raises(InputError) as caught:
        open_source(plain_http_server + "big.tif?token=s3cret")
    message = str(caught.value)
    assert "\n" not in message and "s3cret" not in message
    assert message.startswith(f"{plain_http_server}big.tif?token=REDACTED is not a readable")
    assert "does not answer HTTP Range requests" in message
    with pytest.raises(InputError, match="no file there; check the URL"):
        open_source(plain_http_server + "missing.tif")


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("https://u:p@h.org/a.tif?X-Amz-Signature=abc&X-Amz-Credential=k&x=1",
         "https://h.org/a.tif?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED&x=1"),
        ("https://h.org/a.tif?sv=2024&sig=xyz", "https://h.org/a.tif?sv=REDACTED&sig=REDACTED"),
        ("/vsicurl/https://a:b@h/x.tif", "/vsicurl/https://h/x.tif"),
        ("s3://bucket/k.tif", "s3://bucket/k.tif"),
        ("/data/local.tif", "/data/local.tif"),
    ],
)  # fmt: skip
def test_redact(location, expected):
    assert redact(location) == expected


def test_gdal_names_and_suffixes():
    assert to_gdal_path("s3://b/k/x.tif") == "/vsis3/b/k/x.tif"
    assert to_gdal_path("gs://b/x.tif") == "/vsigs/b/x.tif"
    assert to_gdal_path("az://container/x.tif") == "/vsiaz/container/x.tif"
    assert to_gdal_path("https://h/x.tif") == "/vsicurl/https://h/x.tif"
    assert to_gdal_path("/vsizip/a.zip/x.tif") == "/vsizip/a.zip/x.tif"
    assert location_suffix("https://h/x.TIF?sig=1") == ".tif"
    assert join_location("https://h/items/i.json", "../b/B04.tif") == "https://h/b/B04.tif"
    # an absolute path is on the item's host; an href's own query (a signature) is kept
    signed = "/b/B04.tif?sig=1&se=2"
    assert join_location("https://h/items/i.json?x=1", signed) == "https://h" + signed
    assert join_location("s3://bkt/items/i.json", "/b/B04.tif") == "s3://bkt/b/B04.tif"
    assert join_location("/data/items/i.json", "/b/B04.tif") == "/b/B04.tif"
    assert join_location("/data/items/i.json", "B04.tif") == "/data/items/B04.tif"
    assert join_location("/data/items/i.json", "s3://b/B04.tif") == "s3://b/B04.tif"
