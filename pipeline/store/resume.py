"""Whether an existing store may be resumed: every setting that shapes its pixels must match.

A store records what made it (model hash, tile, halo, bands, precision, source, threshold,
shape, classes, probability encoding, test-time augmentation, stain normalisation). Resuming
with any of them changed would mix two results in one store, so it is refused with every
difference named (pure: works on attrs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import StoreError

__all__ = ["RESUME_KEYS", "check_resume", "fingerprint", "source_id"]


def source_id(source: Any) -> str:
    """Return a comparable name for a source: a local file's absolute path, else the text.

    Examples
    --------
    >>> source_id("<array>")
    '<array>'
    """
    text = str(source)
    if "://" in text or text.startswith(("/vsi", "<")):
        return text
    return str(Path(text).absolute())


def _model(attrs: Mapping[str, Any]) -> Any:
    model = attrs.get("model")
    return model.get("sha256") if isinstance(model, Mapping) else model


def _source(attrs: Mapping[str, Any]) -> Any:
    value = attrs.get("source_id", attrs.get("source"))
    return None if value is None else source_id(value)


def _float(key: str) -> Callable[[Mapping[str, Any]], Any]:
    def get(attrs: Mapping[str, Any]) -> Any:
        value = attrs.get(key)
        return None if value is None else float(value)

    return get


def _plain(key: str) -> Callable[[Mapping[str, Any]], Any]:
    def get(attrs: Mapping[str, Any]) -> Any:
        value = attrs.get(key)
        return list(value) if isinstance(value, tuple) else value

    return get


def _stain(attrs: Mapping[str, Any]) -> Any:
    """Stain normalisation: the method and its target (the fit on the slide is repeatable)."""
    stain = attrs.get("stain")
    if not isinstance(stain, Mapping):
        return "none"
    return {"method": stain.get("method"), "target": stain.get("target")}


#: What must match to resume, and how each is read from the attributes.
RESUME_KEYS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "model": _model,
    "source": _source,
    "bands": _plain("bands"),
    "shape": _plain("shape"),
    "tile": _plain("tile"),
    "halo": _plain("halo"),
    "precision": _plain("precision_requested"),
    "threshold": _float("threshold"),
    "classes": _plain("classes"),
    "probabilities": _plain("probabilities_dtype"),
    "tta": _plain("tta"),
    "stain": _stain,
}
#: The attribute each key is read from, where it is not the key itself: a store that does not
#: record it (an older version) is not held to it.
_RECORDED_AS: dict[str, tuple[str, ...]] = {
    "source": ("source_id", "source"),
    "precision": ("precision_requested",),
    "probabilities": ("probabilities_dtype",),
}


def fingerprint(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Return the resume-relevant settings of a store's (or a new run's) attributes."""
    return {key: get(attrs) for key, get in RESUME_KEYS.items()}


def check_resume(path: str | Path, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Refuse to resume the store at ``path`` if any setting differs.

    A setting the old store does not record (a store from an older version) is not held
    against it.

    Raises
    ------
    StoreError
        Naming every difference, old value then new.
    """
    before, after = fingerprint(old), fingerprint(new)
    recorded = {
        key for key in RESUME_KEYS if any(name in old for name in _RECORDED_AS.get(key, (key,)))
    }
    diff = [
        f"{key} {before[key]!r} != {after[key]!r}"
        for key in RESUME_KEYS
        if key in recorded and before[key] is not None and before[key] != after[key]
    ]
    if diff:
        raise StoreError(
            f"cannot resume {path}: it was made with other settings ({'; '.join(diff)}); "
            "use --overwrite to replace it"
        )
