"""Stain normalisation for brightfield slides: Macenko and Reinhard, fitted once per slide.

A stain normaliser is *fitted once* on the slide's tissue at a low-resolution level and then
applied to every tile with the same parameters. Both methods are per-pixel maps of the RGB
value, written here with elementwise NumPy only (lookup tables and explicit sums, no matrix
products whose rounding could depend on the array's size), so a pixel normalises to the same
value in whichever tile it is read and tiled output still equals whole-image inference.

- **Macenko** (Macenko et al., ISBI 2009): optical density ``OD = -ln((I + 1) / Io)``; the two
  stain vectors (haematoxylin, eosin) are the extreme angles of the tissue's OD in the plane of
  its two main directions (percentiles ``alpha`` and ``100 - alpha``); concentrations are
  scaled so that their 99th percentiles match the target's, and recomposed with the target's
  stain vectors. Default target: the reference H&E of the paper's reference implementation.
- **Reinhard** (Reinhard et al., 2001): per-channel mean and standard deviation in CIE L*a*b*
  are moved to the target's. A target (a reference image, or statistics in a card) is
  required.

A target comes from a file (a reference image: PNG/JPEG/TIFF, fitted the same way; or a JSON
of fitted parameters as written by :meth:`StainFit.to_dict`) or from the model card's
``stain`` entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import ConfigError, InputError

if TYPE_CHECKING:
    from pipeline.read.slide import SlideSource
    from pipeline.read.tissue import TissueMask

__all__ = [
    "MACENKO_REFERENCE",
    "STAIN_METHODS",
    "StainFit",
    "StainNormalizer",
    "fit_macenko",
    "fit_reinhard",
    "fit_slide",
    "fit_stain",
    "lab_to_rgb",
    "load_target",
    "rgb_to_lab",
]

#: ``--stain`` values.
STAIN_METHODS = ("none", "macenko", "reinhard")
#: The reference H&E of Macenko's reference implementation: stain vectors (columns: H, E) in
#: OD space and the 99th-percentile concentrations.
MACENKO_REFERENCE: dict[str, Any] = {
    "method": "macenko",
    "stain_matrix": [[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]],
    "max_concentrations": [1.9705, 1.0308],
}
_IO = 240.0  # transmitted light intensity (the glass), as in Macenko's implementation
_BETA = 0.15  # OD below this is background, not stain
_ALPHA = 1.0  # percentile of the extreme angles
_MIN_PIXELS = 100


@dataclass(frozen=True)
class StainFit:
    """Fitted stain parameters of one image (a slide or a reference).

    Attributes
    ----------
    method
        ``macenko`` or ``reinhard``.
    values
        Macenko: ``stain_matrix`` (3 x 2, OD space, columns H and E) and
        ``max_concentrations`` (2); Reinhard: ``mean`` and ``std`` (3 each, L*a*b*).
    """

    method: str
    values: tuple[tuple[str, tuple[Any, ...]], ...]

    def get(self, key: str) -> npt.NDArray[np.float64]:
        """Return one fitted array."""
        return np.asarray(dict(self.values)[key], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able parameters (also the format of a target file)."""
        return {"method": self.method, **{k: _to_list(v) for k, v in self.values}}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "stain target") -> StainFit:
        """Parse parameters written by :meth:`to_dict` (or a card's ``stain`` entry)."""
        method = str(data.get("method", ""))
        keys = {
            "macenko": (("stain_matrix", (3, 2)), ("max_concentrations", (2,))),
            "reinhard": (("mean", (3,)), ("std", (3,))),
        }.get(method)
        if keys is None:
            raise ConfigError(f"{where}: method {method!r} is not 'macenko' or 'reinhard'")
        values = []
        for key, shape in keys:
            try:
                array = np.asarray(data[key], dtype=np.float64)
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"{where}: {method} needs {key!r} of shape {shape}") from None
            if array.shape != shape or not np.isfinite(array).all():
                raise ConfigError(
                    f"{where}: {key} has shape {array.shape}, expected {shape} finite numbers"
                )
            values.append((key, _to_tuple(array)))
        return cls(method, tuple(values))


def _to_tuple(array: npt.NDArray[Any]) -> tuple[Any, ...]:
    if array.ndim == 1:
        return tuple(float(v) for v in array)
    return tuple(_to_tuple(row) for row in array)


def _to_list(value: Any) -> Any:
    return [_to_list(v) for v in value] if isinstance(value, tuple) else value


def _pixels(rgb: npt.NDArray[Any], mask: npt.NDArray[np.bool_] | None) -> npt.NDArray[np.float64]:
    """``(N, 3)`` float pixels of a ``(3, H, W)`` image, under ``mask`` when given."""
    flat = np.asarray(rgb, dtype=np.float64).reshape(3, -1).T
    if mask is not None:
        flat = flat[np.asarray(mask, bool).ravel()]
    return flat


def fit_macenko(rgb: npt.NDArray[Any], mask: npt.NDArray[np.bool_] | None = None) -> StainFit:
    """Fit Macenko's stain vectors and maximum concentrations on ``(3, H, W)`` uint8 RGB."""
    od = -np.log((_pixels(rgb, mask) + 1.0) / _IO)
    od = od[(od > _BETA).all(axis=1)]
    if len(od) < _MIN_PIXELS:
        raise InputError(
            f"too few stained pixels ({len(od)}) to fit Macenko stain vectors; check the tissue "
            "mask, or use --stain reinhard or none"
        )
    _, vectors = np.linalg.eigh(np.cov(od.T))
    plane = vectors[:, 1:3]  # the two main directions
    projected = od @ plane
    angle = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angle, [_ALPHA, 100 - _ALPHA])
    v1 = plane @ np.array([np.cos(low), np.sin(low)])
    v2 = plane @ np.array([np.cos(high), np.sin(high)])
    # haematoxylin first: the vector with the larger red OD
    stains = np.stack([v1, v2], axis=1) if v1[0] > v2[0] else np.stack([v2, v1], axis=1)
    stains = stains * np.sign(stains.sum(axis=0))  # OD vectors point into the positive octant
    stains = stains / np.linalg.norm(stains, axis=0)
    concentrations = np.linalg.lstsq(stains, od.T, rcond=None)[0]
    maxima = np.percentile(concentrations, 99, axis=1)
    values = (("stain_matrix", _to_tuple(stains)), ("max_concentrations", _to_tuple(maxima)))
    return StainFit("macenko", values)


# -- CIE L*a*b* (sRGB, D65), elementwise only ------------------------------------------------

_RGB_TO_XYZ = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE = (0.95047, 1.0, 1.08883)


def _mix(matrix: npt.NDArray[np.float64], a: Any, b: Any, c: Any) -> list[Any]:
    return [matrix[i, 0] * a + matrix[i, 1] * b + matrix[i, 2] * c for i in range(3)]


def rgb_to_lab(rgb: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """``(3, ...)`` uint8 sRGB -> ``(3, ...)`` CIE L*a*b* (D65), elementwise."""
    scaled = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(scaled > 0.04045, ((scaled + 0.055) / 1.055) ** 2.4, scaled / 12.92)
    xyz = _mix(_RGB_TO_XYZ, linear[0], linear[1], linear[2])
    f = [
        np.where(t > 0.008856, np.cbrt(t), 7.787 * t + 16.0 / 116.0)
        for t in (xyz[i] / _WHITE[i] for i in range(3))
    ]
    return np.stack([116.0 * f[1] - 16.0, 500.0 * (f[0] - f[1]), 200.0 * (f[1] - f[2])])


def lab_to_rgb(lab: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """``(3, ...)`` CIE L*a*b* -> ``(3, ...)`` uint8 sRGB (clipped, rounded), elementwise."""
    fy = (lab[0] + 16.0) / 116.0
    fs = (fy + lab[1] / 500.0, fy, fy - lab[2] / 200.0)
    xyz = [
        _WHITE[i] * np.where(f > 0.206893, f**3, (f - 16.0 / 116.0) / 7.787)
        for i, f in enumerate(fs)
    ]
    linear = np.clip(np.stack(_mix(_XYZ_TO_RGB, xyz[0], xyz[1], xyz[2])), 0.0, 1.0)
    scaled = np.where(linear > 0.0031308, 1.055 * linear ** (1.0 / 2.4) - 0.055, 12.92 * linear)
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def fit_reinhard(rgb: npt.NDArray[Any], mask: npt.NDArray[np.bool_] | None = None) -> StainFit:
    """Fit Reinhard's L*a*b* mean and standard deviation on ``(3, H, W)`` uint8 RGB.

    Glass (optical density below Macenko's background level in every channel) is left out
    as well as what ``mask`` excludes, so a reference image with glass around its tissue and
    a slide fitted on its tissue mask (or with ``--tissue off``) describe the same thing.
    """
    rgb = np.asarray(rgb)
    lab = rgb_to_lab(rgb)
    flat = lab.reshape(3, -1)
    keep = ~(rgb.reshape(3, -1) >= _IO * np.exp(-_BETA)).all(axis=0)
    if mask is not None:
        keep &= np.asarray(mask, bool).ravel()
    flat = flat[:, keep]
    if flat.shape[1] < _MIN_PIXELS:
        raise InputError(
            f"too few tissue pixels ({flat.shape[1]}) to fit Reinhard statistics; check the "
            "tissue mask, or use --stain none"
        )
    std = np.maximum(flat.std(axis=1), 1e-6)
    return StainFit("reinhard", (("mean", _to_tuple(flat.mean(axis=1))), ("std", _to_tuple(std))))


def fit_stain(
    method: str, rgb: npt.NDArray[Any], mask: npt.NDArray[np.bool_] | None = None
) -> StainFit:
    """Fit ``method`` (``macenko`` or ``reinhard``) on ``(3, H, W)`` uint8 RGB."""
    if method == "macenko":
        return fit_macenko(rgb, mask)
    if method == "reinhard":
        return fit_reinhard(rgb, mask)
    raise ConfigError(f"stain method {method!r} is not one of macenko, reinhard")


@dataclass(frozen=True)
class StainNormalizer:
    """Maps a slide's colours to a target's with fixed, fitted parameters (picklable).

    Parameters
    ----------
    source
        Parameters fitted on the slide.
    target
        Parameters of the reference.
    """

    source: StainFit
    target: StainFit

    def __post_init__(self) -> None:
        if self.source.method != self.target.method:
            raise ConfigError(
                f"stain target is a {self.target.method} fit but the slide was fitted with "
                f"{self.source.method}; give a target of the same method"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record for the store."""
        return {
            "method": self.source.method,
            "fitted": self.source.to_dict(),
            "target": self.target.to_dict(),
        }

    def __call__(self, rgb: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
        """Normalise ``(3, H, W)`` uint8 RGB; each output pixel depends on its input only."""
        if self.source.method == "macenko":
            return self._macenko(np.asarray(rgb))
        lab = rgb_to_lab(rgb)
        mean_s, std_s = self.source.get("mean"), self.source.get("std")
        mean_t, std_t = self.target.get("mean"), self.target.get("std")
        moved = np.stack(
            [(lab[i] - mean_s[i]) * (std_t[i] / std_s[i]) + mean_t[i] for i in range(3)]
        )
        return lab_to_rgb(moved)

    def _macenko(self, rgb: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
        # OD_out = target_stains @ diag(scale) @ pinv(source_stains) @ OD_in: one 3 x 3 map,
        # applied through per-value lookup tables (OD of each uint8 value), explicit sums.
        scale = self.target.get("max_concentrations") / self.source.get("max_concentrations")
        linear = self.target.get("stain_matrix") @ np.diag(scale)
        linear = linear @ np.linalg.pinv(self.source.get("stain_matrix"))
        od_of = -np.log((np.arange(256, dtype=np.float64) + 1.0) / _IO)
        values = np.asarray(rgb, dtype=np.uint8)
        od = [od_of[values[k]] for k in range(3)]
        out = [
            _IO * np.exp(-(linear[c, 0] * od[0] + linear[c, 1] * od[1] + linear[c, 2] * od[2]))
            for c in range(3)
        ]
        return np.rint(np.clip(np.stack(out), 0.0, 255.0)).astype(np.uint8)


def load_target(method: str, target: Any = None, card: dict[str, Any] | None = None) -> StainFit:
    """Return the reference to normalise towards: a file, the card's ``stain``, or the default.

    Parameters
    ----------
    method
        ``macenko`` or ``reinhard``.
    target
        A JSON of fitted parameters, or a reference image (PNG/JPEG/TIFF) fitted here.
    card
        The model card's ``stain`` entry, used when ``target`` is not given: fitted
        parameters, or ``{method: macenko}`` alone for Macenko's standard reference.
    """
    if target is not None:
        path = Path(str(target))
        if not path.is_file():
            raise ConfigError(f"stain target {path} does not exist; give a JSON or an image")
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(path.read_text())
            except ValueError as exc:
                raise ConfigError(f"stain target {path} is not valid JSON ({exc})") from None
            fit = StainFit.from_dict(data, where=f"stain target {path}")
        else:
            fit = fit_stain(method, _read_image(path))
    elif card and set(card) == {"method"} and card["method"] == "macenko":
        fit = StainFit.from_dict(MACENKO_REFERENCE)  # a card naming the method only
    elif card:
        fit = StainFit.from_dict(card, where="the model card's stain entry")
    elif method == "macenko":
        fit = StainFit.from_dict(MACENKO_REFERENCE)
    else:
        raise ConfigError(
            "--stain reinhard needs a target: give --stain-target (a reference image or a JSON "
            "of fitted parameters) or a model card with a 'stain' entry"
        )
    if fit.method != method:
        raise ConfigError(
            f"stain target is a {fit.method} fit but --stain is {method}; use matching ones"
        )
    return fit


def _read_image(path: Path) -> npt.NDArray[np.uint8]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(f"stain target {path} is not a readable image ({reason})") from None
    return np.moveaxis(rgb, -1, 0)


def fit_slide(
    source: SlideSource,
    method: str,
    *,
    target: Any = None,
    card: dict[str, Any] | None = None,
    tissue: TissueMask | None = None,
    max_size: int = 1024,
) -> StainNormalizer:
    """Fit ``method`` once on a slide's tissue at low resolution; return the normaliser.

    Parameters
    ----------
    source
        The slide (its raw overview is read, level-native).
    method
        ``macenko`` or ``reinhard``.
    target, card
        See :func:`load_target`.
    tissue
        The run's tissue mask: only its pixels are fitted (all pixels when ``None``).
    """
    if method not in STAIN_METHODS or method == "none":
        raise ConfigError(f"--stain {method!r} is not one of {', '.join(STAIN_METHODS)}")
    reference = load_target(method, target, card)
    image, _ = source.overview(max_size)
    if image.shape[0] != 3 or image.dtype != np.uint8:
        raise ConfigError(
            f"stain normalisation needs 8-bit RGB, but {source.name} is read as "
            f"{image.shape[0]} {image.dtype} band(s); use --stain none"
        )
    mask = None
    if tissue is not None and tissue.validity is not None:
        full = tissue.validity.mask
        rows = np.linspace(0, full.shape[0] - 1, image.shape[1]).round().astype(int)
        cols = np.linspace(0, full.shape[1] - 1, image.shape[2]).round().astype(int)
        mask = full[rows[:, None], cols[None, :]]
    try:
        fitted = fit_stain(method, image, mask)
    except InputError as exc:
        raise InputError(f"{source.name}: {exc}") from None
    return StainNormalizer(fitted, reference)
