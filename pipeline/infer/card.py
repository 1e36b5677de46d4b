"""Model cards: what a model file cannot say about itself, in one validated record.

A card travels beside a model file (``model.onnx`` + ``model.card.yaml`` or ``.card.json``)
or inside it (ONNX metadata property ``gigaseg.card``, TorchScript extra file
``gigaseg.card.json``, the header of a gigaseg safetensors checkpoint). It states how pixels
go in and what comes out, so a model trained elsewhere (TensorFlow NHWC exports, softmax
heads) runs exactly like a gigaseg checkpoint::

    card: 1
    name: nuclei
    input:
      layout: NHWC              # NCHW | NHWC
      channels: 1
      bands: [1]                # 1-based source bands, in the order the model wants them
      dtype: float32            # float32 | float16 | uint8
      normalisation:            # applied in this order: bit_depth, percentiles, mean/std
        bit_depth: 8            # x / (2**8 - 1)
        mean: [0.5]
        std: [0.25]
      size: 1024                # a fixed input size ...
      multiple: 32              # ... and/or the size/offset granularity (2**depth)
    halo: 64                    # pixels, or "measure" (probe the receptive field)
    output:
      layout: NHWC
      activation: softmax       # already applied: none | sigmoid | softmax | probabilities
      name: softmax             # optional: which output of several (name or 0-based position)
    classes:
      - {name: background, color: [0, 0, 0]}
      - {name: nucleus, color: [220, 50, 47]}
    pixel_size: 0.5
    pixel_unit: um              # um (slides) | m (maps)
    stain: {method: macenko}    # optional stain-normalisation target (see issue 10 part 5)

``activation`` says what the model *already* did: gigaseg applies a sigmoid/softmax only to
``none`` (logits), never a second time. Validation errors name the key path
(``input.layout: ...``). Placeholders left by ``gigaseg model-card`` (values starting with
``TODO``) are reported by key path too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import CheckpointError

__all__ = [
    "ACTIVATIONS",
    "CARD_KEY",
    "CARD_SUFFIXES",
    "CARD_VERSION",
    "LAYOUTS",
    "CardClass",
    "CardInput",
    "CardOutput",
    "ModelCard",
    "Normalisation",
    "card_beside",
    "find_todos",
    "guess_layout",
    "parse_card",
    "read_card",
]

#: Metadata key / extra-file stem under which a card is embedded in a model file.
CARD_KEY = "gigaseg.card"
#: Card file suffixes looked for beside ``model.<ext>`` (as ``model.card.yaml`` ...).
CARD_SUFFIXES = (".card.yaml", ".card.yml", ".card.json")
CARD_VERSION = 1
LAYOUTS = ("NCHW", "NHWC")
#: What the model's output already is: ``none`` = logits (gigaseg applies sigmoid for one
#: channel, softmax otherwise); the others are used as they are.
ACTIVATIONS = ("none", "sigmoid", "softmax", "probabilities")

Layout = Literal["NCHW", "NHWC"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Normalisation(_Strict):
    """Raw pixels -> model input, applied as bit depth, then percentiles, then mean/std.

    Attributes
    ----------
    bit_depth
        Divide by ``2**bit_depth - 1`` (8 -> 255, 12 -> 4095, 16 -> 65535).
    percentiles
        ``[low, high]`` percentiles mapped to 0 and 1 per band. ``values`` holds the fitted
        per-band ``[low_value, high_value]``; without it, :func:`pipeline.predict` fits them
        once per source (never per tile, so tiled output still equals the whole image).
    mean, std
        Per-band ``(x - mean) / std``.
    """

    bit_depth: int | None = Field(None, ge=1, le=32)
    percentiles: tuple[float, float] | None = None
    values: list[tuple[float, float]] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Normalisation:
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither")
        if self.mean is not None and self.std is not None:
            if len(self.mean) != len(self.std):
                raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}")
            if any(s <= 0 for s in self.std):
                raise ValueError(f"std values must be positive, got {self.std}")
        if self.percentiles is not None:
            low, high = self.percentiles
            if not 0 <= low < high <= 100:
                raise ValueError(f"percentiles must be 0 <= low < high <= 100, got {[low, high]}")
        if self.values is not None and self.percentiles is None:
            raise ValueError("values are fitted percentiles: give percentiles too")
        return self


class CardInput(_Strict):
    """How pixels go into the model."""

    layout: Layout
    channels: int = Field(ge=1)
    bands: list[int] | None = None
    dtype: Literal["float32", "float16", "uint8"] = "float32"
    normalisation: Normalisation = Field(default_factory=Normalisation)  # type: ignore[arg-type]
    size: int | None = Field(None, ge=1, description="fixed input height = width")
    multiple: int = Field(32, ge=1, description="size/offset granularity (2**depth)")

    @model_validator(mode="after")
    def _consistent(self) -> CardInput:
        if self.bands is not None:
            if len(self.bands) != self.channels:
                raise ValueError(
                    f"bands lists {len(self.bands)} band(s) but channels is {self.channels}"
                )
            if any(b < 1 for b in self.bands):
                raise ValueError(f"bands are 1-based, got {self.bands}")
        norm = self.normalisation
        if norm.mean is not None and len(norm.mean) != self.channels:
            raise ValueError(
                f"normalisation.mean has {len(norm.mean)} values but channels is {self.channels}"
            )
        if self.size is not None and self.size % self.multiple:
            raise ValueError(f"size {self.size} is not a multiple of multiple {self.multiple}")
        return self


class CardOutput(_Strict):
    """What comes out of the model.

    ``name`` picks one output of a model with several: an ONNX output name or a TorchScript
    dict key, or a position (0-based). Without it, the first output that is an image
    (4-D, or 3-D without a channel axis) is taken.
    """

    layout: Layout
    activation: Literal["none", "sigmoid", "softmax", "probabilities"]
    padding: Literal["same", "valid"] = "same"
    name: str | int | None = None

    @field_validator("name")
    @classmethod
    def _position(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, int) and value < 0:
            raise ValueError(f"an output position is 0-based, got {value}")
        return value


class CardClass(_Strict):
    """One output channel: its name and an ``[r, g, b]`` colour (0-255)."""

    name: str = Field(min_length=1)
    color: tuple[int, int, int] | None = None

    @field_validator("color")
    @classmethod
    def _rgb(cls, value: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if value is not None and not all(0 <= c <= 255 for c in value):
            raise ValueError(f"colour components must be 0..255, got {list(value)}")
        return value


class ModelCard(_Strict):
    """A validated model card (see the module docstring for the YAML form)."""

    card: Literal[1] = 1  # CARD_VERSION
    name: str | None = None
    input: CardInput
    halo: int | Literal["measure"]
    output: CardOutput
    classes: list[CardClass] = Field(min_length=1)
    pixel_size: float | None = Field(None, gt=0)
    pixel_unit: Literal["um", "m"] | None = None
    stain: dict[str, Any] | None = None
    notes: str | None = None

    @field_validator("halo")
    @classmethod
    def _halo(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError(f"halo must be >= 0 pixels or 'measure', got {value}")
        return value

    @field_validator("classes", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        # ``classes: [background, nucleus]`` is short for names without colours
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        if self.output.activation == "sigmoid" and len(self.classes) != 1:
            raise ValueError(
                f"activation sigmoid means one output channel, but {len(self.classes)} "
                "classes are listed (use softmax or probabilities for several channels)"
            )
        if self.output.activation == "softmax" and len(self.classes) < 2:
            raise ValueError("activation softmax needs at least 2 classes (one per channel)")
        return self

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names, one per output channel."""
        return tuple(c.name for c in self.classes)

    def to_dict(self) -> dict[str, Any]:
        """Return the card as plain JSON-able data (defaults included)."""
        data: dict[str, Any] = json.loads(self.model_dump_json())
        return data

    def to_json(self) -> str:
        """Return the card as compact JSON (what is embedded in model files)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_yaml(self) -> str:
        """Return the card as YAML (what ``gigaseg model-card`` writes)."""
        import yaml

        text: str = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        return text


def _key_path(loc: tuple[int | str, ...]) -> str:
    parts = ""
    for part in loc:
        parts += f"[{part}]" if isinstance(part, int) else (f".{part}" if parts else str(part))
    return parts or "card"


def find_todos(data: Any, path: tuple[int | str, ...] = ()) -> list[str]:
    """Key paths of values that are still ``TODO`` placeholders (strings starting with it)."""
    if isinstance(data, str) and data.strip().upper().startswith("TODO"):
        return [_key_path(path)]
    if isinstance(data, dict):
        return [t for k, v in data.items() for t in find_todos(v, (*path, str(k)))]
    if isinstance(data, list):
        return [t for i, v in enumerate(data) for t in find_todos(v, (*path, i))]
    return []


def parse_card(data: Any, *, source: str = "model card") -> ModelCard:
    """Validate card data, raising one line that names every bad key path.

    Parameters
    ----------
    data
        The card as a mapping (parsed YAML/JSON), or a :class:`ModelCard`.
    source
        Where it came from, for the message.

    Examples
    --------
    >>> card = parse_card({"input": {"layout": "NHWC", "channels": 1}, "halo": 16,
    ...                    "output": {"layout": "NHWC", "activation": "softmax"},
    ...                    "classes": ["background", "cell"]})
    >>> card.input.layout, card.class_names
    ('NHWC', ('background', 'cell'))
    >>> parse_card({"halo": 16}, source="m.card.yaml")
    Traceback (most recent call last):
    ...
    pipeline.errors.CheckpointError: m.card.yaml: input: missing; output: missing; classes: missing
    """
    if isinstance(data, ModelCard):
        return data
    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: a model card is a mapping, got {type(data).__name__}")
    todos = find_todos(data)
    if todos:
        raise CheckpointError(f"{source}: fill in the TODO fields before use: {', '.join(todos)}")
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = _key_path(tuple(p for p in error["loc"] if not str(p).startswith("function")))
            message = "missing" if error["type"] == "missing" else error["msg"]
            message = message.removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        raise CheckpointError(f"{source}: {'; '.join(problems)}") from None


def read_card(path: str | Path) -> ModelCard:
    """Read and validate a card file (YAML or JSON)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CheckpointError(f"cannot read model card {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())[:160]
        raise CheckpointError(f"model card {path} is not valid YAML/JSON ({reason})") from None
    return parse_card(data, source=str(path))


def guess_layout(shape: list[Any]) -> str | None:
    """``"NHWC"``/``"NCHW"`` from a 4-D shape when it is clear, else ``None``.

    Examples
    --------
    >>> guess_layout(["N", 1024, 1024, 1]), guess_layout([1, 3, "h", "w"]), guess_layout([1, 8])
    ('NHWC', 'NCHW', None)
    """
    if len(shape) != 4:
        return None
    second, last = shape[1], shape[3]
    small_last = isinstance(last, int) and last <= 4
    small_second = isinstance(second, int) and second <= 4
    if small_last and not small_second:
        return "NHWC"
    if small_second and not small_last:
        return "NCHW"
    return None


def card_beside(model: str | Path) -> Path | None:
    """Return the card file next to ``model`` (``m.onnx`` -> ``m.card.yaml``), if there is one."""
    model = Path(model)
    for suffix in CARD_SUFFIXES:
        candidate = model.with_name(model.stem + suffix)
        if candidate.is_file():
            return candidate
    return None
