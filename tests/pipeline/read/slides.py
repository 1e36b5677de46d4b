"""Tiny pyramidal slides written with tifffile: Aperio SVS with fractional downsamples,
OME-TIFF with SubIFD levels and physical sizes, brightfield and fluorescence tissue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

DATA = Path(__file__).parents[2] / "data"
#: The bundled real Aperio slide (one level).
SVS = DATA / "wsi" / "CMU-1-Small-Region.svs"


def level_sizes(rows: int, cols: int, levels: int) -> list[tuple[int, int]]:
    """Level shapes the way Aperio rounds them: level k is ``floor(size / 2**k)``."""
    return [(rows // 2**k, cols // 2**k) for k in range(levels)]


def pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """``(rows, cols, channels)`` levels, each a resize of level 0 to Aperio's level size."""
    rows, cols = image.shape[:2]
    out = [image]
    for height, width in level_sizes(rows, cols, levels)[1:]:
        planes = [
            np.asarray(Image.fromarray(image[..., c]).resize((width, height), Image.BILINEAR))
            for c in range(image.shape[2])
        ]
        out.append(np.stack(planes, axis=-1))
    return out


def write_svs(
    path: Path,
    image: np.ndarray,
    *,
    levels: int = 3,
    mpp: float = 0.499,
    tile: int = 256,
    compression: str | None = None,
) -> Path:
    """An Aperio-style SVS: baseline, thumbnail, then the reduced levels (tiled RGB)."""
    rows, cols = image.shape[:2]
    pages = pyramid(image, levels)
    head = f"Aperio Image Library v12.0.16\n{cols}x{rows} [0,0 {cols}x{rows}] ({tile}x{tile})"
    tail = f"|AppMag = 20|MPP = {mpp:.4f}"
    options = {"photometric": "rgb", "metadata": None, "compression": compression}
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(pages[0], tile=(tile, tile), description=head + tail, **options)
        thumb = pages[-1][::2, ::2].copy()
        tiff.write(thumb, description=head + " -> thumbnail" + tail, **options)
        for page in pages[1:]:
            text = f"{head} -> {page.shape[1]}x{page.shape[0]}{tail}"
            tiff.write(page, tile=(tile, tile), description=text, **options)
    return path


def write_ome(
    path: Path,
    image: np.ndarray,
    *,
    levels: int = 3,
    physical_size: tuple[float, float] = (0.26, 0.25),
    unit: str = "µm",
    channels: list[str] | None = None,
    tile: int = 128,
) -> Path:
    """An OME-TIFF whose reduced levels are SubIFDs of level 0.

    ``image`` is ``(rows, cols, 3)`` uint8 RGB (written as YXS) or ``(channels, rows, cols)``
    for fluorescence (written as CYX, one named channel each with an emission wavelength).
    """
    rgb = image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.uint8
    if rgb:
        pages = pyramid(image, levels)
        axes, photometric = "YXS", "rgb"
    else:
        planes = pyramid(np.moveaxis(image, 0, -1), levels)
        pages = [np.ascontiguousarray(np.moveaxis(p, -1, 0)) for p in planes]
        axes, photometric = "CYX", "minisblack"
    metadata: dict[str, object] = {
        "axes": axes,
        "PhysicalSizeY": physical_size[0],
        "PhysicalSizeX": physical_size[1],
        "PhysicalSizeYUnit": unit,
        "PhysicalSizeXUnit": unit,
    }
    if not rgb:
        names = channels or [f"ch{i}" for i in range(image.shape[0])]
        metadata["Channel"] = {
            "Name": names,
            "EmissionWavelength": [460.0 + 60 * i for i in range(len(names))],
        }
    with tifffile.TiffWriter(path, bigtiff=False) as tiff:
        tiff.write(
            pages[0],
            subifds=levels - 1,
            tile=(tile, tile),
            photometric=photometric,
            metadata=metadata,
        )
        for page in pages[1:]:
            tiff.write(page, subfiletype=1, tile=(tile, tile), photometric=photometric)
    return path


def blobs(rows: int, cols: int, *, seed: int = 0, count: int = 6) -> np.ndarray:
    """A boolean mask of a few discs (the "tissue") away from the border."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:cols]
    mask = np.zeros((rows, cols), bool)
    for _ in range(count):
        cy = rng.uniform(0.2, 0.8) * rows
        cx = rng.uniform(0.2, 0.8) * cols
        radius = rng.uniform(0.05, 0.12) * min(rows, cols)
        mask |= (r - cy) ** 2 + (c - cx) ** 2 < radius**2
    return mask


def brightfield(rows: int, cols: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """H&E-like RGB: near-white glass, pink/purple textured tissue. Returns image and mask."""
    rng = np.random.default_rng(seed)
    mask = blobs(rows, cols, seed=seed)
    image = np.full((rows, cols, 3), 236, np.float32) + rng.normal(0, 3, (rows, cols, 3))
    tissue = np.array([170.0, 90.0, 160.0]) + rng.normal(0, 25, (rows, cols, 3))
    image[mask] = tissue[mask]
    return np.clip(image, 0, 255).astype(np.uint8), mask


def fluorescence(rows: int, cols: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """DAPI-like RGB: dark background, bright blue-white objects. Returns image and mask."""
    rng = np.random.default_rng(seed)
    mask = blobs(rows, cols, seed=seed)
    image = np.full((rows, cols, 3), 6, np.float32) + rng.normal(0, 2, (rows, cols, 3))
    objects = np.array([60.0, 90.0, 220.0]) + rng.normal(0, 20, (rows, cols, 3))
    image[mask] = objects[mask]
    return np.clip(image, 0, 255).astype(np.uint8), mask


def textured(rows: int, cols: int, *, seed: int = 0) -> np.ndarray:
    """Random RGB texture (every pixel differs): a misplaced or resampled pixel cannot hide."""
    return np.random.default_rng(seed).integers(0, 256, (rows, cols, 3)).astype(np.uint8)


def real_aperio_pyramid(path: Path, *, levels: int = 3) -> Path:
    """The bundled real Aperio slide's pixels as a JPEG SVS pyramid (2220x2967 -> 1110x1483
    -> 555x741: downsamples 2.0 x 2.0007 and 4.0 x 4.004), 240-pixel tiles like the original."""
    with tifffile.TiffFile(SVS) as tiff:
        image = tiff.series[0].levels[0].asarray()
    return write_svs(path, image, levels=levels, tile=240, compression="jpeg")


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(rows, cols, channels)`` resized per channel (bilinear) to ``height x width``."""
    planes = [
        np.asarray(Image.fromarray(image[..., c]).resize((width, height), Image.BILINEAR))
        for c in range(image.shape[2])
    ]
    return np.stack(planes, axis=-1)


def write_generic(
    path: Path,
    image: np.ndarray,
    sizes: list[tuple[int, int]],
    *,
    subifds: bool = False,
    tile: int | None = 64,
    compression: str | None = None,
    extrasamples: list[int] | None = None,
) -> Path:
    """A generic pyramidal TIFF (no vendor or OME metadata, no georeferencing), as libvips
    and QuPath write them: reduced levels of ``sizes[1:]`` as pages marked reduced-resolution,
    or as SubIFDs of level 0; tiled (JPEG gives YCbCr) or striped (``tile=None``)."""
    options: dict[str, object] = {"photometric": "rgb", "metadata": None}
    options["compression"] = compression
    options["extrasamples"] = extrasamples
    if tile is None:
        options["rowsperstrip"] = 16
    else:
        options["tile"] = (tile, tile)
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(image, subifds=len(sizes) - 1 if subifds else None, **options)
        for height, width in sizes[1:]:
            tiff.write(resize(image, height, width), subfiletype=1, **options)
    return path


def write_ome_series(
    path: Path, image: np.ndarray, sizes: list[tuple[int, int]], *, mpp: float = 0.25
) -> Path:
    """An OME-TIFF with each level of ``sizes`` its own image (series), then a label image."""
    with tifffile.TiffWriter(path, ome=True) as tiff:
        for i, (height, width) in enumerate(sizes):
            level = image if i == 0 else resize(image, height, width)
            metadata = {
                "axes": "YXS",
                "PhysicalSizeX": mpp * image.shape[1] / width,
                "PhysicalSizeY": mpp * image.shape[0] / height,
                "Name": f"level {i}",
            }
            tiff.write(level, tile=(64, 64), photometric="rgb", metadata=metadata)
        label = textured(90, 300, seed=9)  # a wide label image: not a level
        tiff.write(label, photometric="rgb", metadata={"axes": "YXS", "Name": "label"})
    return path


def write_leica_scn(
    path: Path, regions: list[tuple[int, int, np.ndarray]], *, nm: int = 500
) -> Path:
    """A Leica SCN: a macro image of the whole collection, then each region as a 2-level pyramid.

    ``regions`` holds ``(x, y, image)``: the region's level-0 pixel offset in the collection
    and its ``(rows, cols, 3)`` pixels. Sizes in the XML are nanometres (``nm`` per pixel).
    """
    cols, rows = 4 * max(x + im.shape[1] for x, _, im in regions), 0
    rows = 2 * max(y + im.shape[0] for _, y, im in regions)
    settings = (
        "<scanSettings><objectiveSettings><objective>20</objective></objectiveSettings>"
        "<illuminationSettings><numericalAperture>0.7</numericalAperture>"
        "<illuminationSource>brightfield</illuminationSource></illuminationSettings>"
        "</scanSettings>"
    )

    def image_xml(name: str, dims: list[tuple[int, int, int]], view: tuple[int, ...]) -> str:
        dimension = "".join(
            f'<dimension sizeX="{w}" sizeY="{h}" r="{r}" ifd="{ifd}"/>'
            for r, (w, h, ifd) in enumerate(dims)
        )
        width, height, x, y = (v * nm for v in view)
        return (
            f'<image name="{name}" uuid="{name}"><creationDate>2020-01-01T00:00:00Z'
            '</creationDate><device model="Leica SCN400;Leica SCN" version="1.5"/>'
            f'<pixels sizeX="{dims[0][0]}" sizeY="{dims[0][1]}">{dimension}</pixels>'
            f'<view sizeX="{width}" sizeY="{height}" offsetX="{x}" offsetY="{y}" '
            f'spacingZ="0"/>{settings}</image>'
        )

    macro = np.full((rows // 16, cols // 16, 3), 230, np.uint8)
    pages, images = [macro], [image_xml("macro", [(cols // 16, rows // 16, 0)], (cols, rows, 0, 0))]
    for k, (x, y, image) in enumerate(regions):
        levels = pyramid(image, 2)
        dims = [(lv.shape[1], lv.shape[0], len(pages) + i) for i, lv in enumerate(levels)]
        images.append(image_xml(f"region{k}", dims, (image.shape[1], image.shape[0], x, y)))
        pages.extend(levels)
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<scn xmlns="http://www.leica-microsystems.com/scn/2010/10/01">'
        f'<collection name="c" uuid="c" sizeX="{cols * nm}" sizeY="{rows * nm}">'
        + "".join(images)
        + "</collection></scn>"
    )
    with tifffile.TiffWriter(path) as tiff:
        for i, page in enumerate(pages):
            tiff.write(
                page,
                tile=(64, 64),
                photometric="rgb",
                metadata=None,
                description=xml if i == 0 else None,
            )
    return path
