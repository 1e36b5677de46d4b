"""The main job on the bundled sample (``make run``): predict, vectorize, preview, evaluate.

``python -m workflows.demo --out out`` segments the SpaceNet chip in ``sample/`` with the shipped
demo building model, traces the buildings to GeoJSON outlines (EPSG:4326), draws a preview PNG
and scores the outlines against the 43 real footprints (object F1 at IoU >= 0.5, SpaceNet rule).

Outputs from an earlier demo run in the same folder (listed in its ``demo.json``) are replaced;
any other existing file of the same name is left alone and reported as an error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DEMO_TTA", "SAMPLE", "main", "run_demo"]

#: The bundled sample: image, true footprints and demo model.
SAMPLE = Path(__file__).resolve().parents[1] / "sample"
#: Test-time augmentation of the demo's prediction (see sample/README.md for its effect).
DEMO_TTA = 1
_OUTPUTS = {
    "store": "sample.zarr",
    "outlines": "buildings.geojson",
    "preview": "preview.png",
    "scores": "scores.json",
}


def _owned(out: Path) -> set[str]:
    """Names of outputs an earlier demo run wrote into ``out`` (safe to replace)."""
    report = out / "demo.json"
    if not report.is_file():
        return set()
    try:
        return set(json.loads(report.read_text(encoding="utf-8")).get("outputs", {}).values())
    except (json.JSONDecodeError, AttributeError):
        return set()


def _start_cluster(workers: int | None) -> tuple[Any, Any]:
    """One local Dask cluster shared by predict and vectorize when workers are asked for.

    ``None`` lets each stage's runner choose (in this process on a small CPU machine);
    ``0`` runs in this process.
    """
    if not workers:
        return None, None
    from distributed import Client

    from pipeline.runner import local_cluster

    cluster = local_cluster(workers, 2)
    return Client(cluster), cluster  # type: ignore[no-untyped-call]


def run_demo(
    out: str | Path,
    *,
    image: str | Path = SAMPLE / "sample_geotiff.tif",
    truth: str | Path = SAMPLE / "geotiff_labels.geojson",
    model: str | Path = SAMPLE / "model" / "buildings.safetensors",
    tile: int = 512,
    workers: int | None = None,
    min_area: float = 4.0,
    tta: int = DEMO_TTA,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run predict -> vectorize -> preview -> evaluate; return a JSON-able report.

    Parameters
    ----------
    out
        Output folder (created).
    image, truth, model
        The scene, its true building footprints and the checkpoint (defaults: the sample).
    tile
        Core tile of one prediction task.
    tta
        Test-time augmentation transforms averaged at predict time (1, 2, 4 or 8).
    workers
        Local Dask worker processes, one cluster for both stages (0 runs in this process;
        ``None``: the runner's choice, see :mod:`pipeline.runner`).
    min_area
        Drop outlines smaller than this (m²).
    overwrite
        Replace existing outputs even if no earlier demo run wrote them.
    progress
        Show progress bars.

    Returns
    -------
    dict
        Paths, timings, the object F1 and pixel IoU.
    """
    import pipeline
    from pipeline.errors import OutputExistsError
    from pipeline.evaluate import evaluate
    from pipeline.preview import render_preview

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {key: out / name for key, name in _OUTPUTS.items()}
    owned = _owned(out)
    for path in paths.values():
        if path.exists() and not overwrite and str(path) not in owned:
            raise OutputExistsError(
                f"{path} exists and was not written by the demo; remove it or pass --overwrite"
            )
    replace = {key: overwrite or str(path) in owned for key, path in paths.items()}
    seconds: dict[str, float] = {}

    client, cluster = _start_cluster(workers)
    try:
        started = time.perf_counter()
        predicted = pipeline.predict(
            str(image),
            str(model),
            str(paths["store"]),
            tile=tile,
            tta=tta,
            precision="fp32",  # bf16 (auto on AVX-512-BF16 CPUs) costs this small model ~0.1 IoU
            workers=workers,
            client=client,
            overwrite=replace["store"] and paths["store"].exists(),
            progress=progress,
        )
        seconds["predict"] = time.perf_counter() - started

        started = time.perf_counter()
        vectorized = pipeline.vectorize(
            str(paths["store"]),
            str(paths["outlines"]),
            min_area=min_area,
            workers=workers,
            client=client,
            overwrite=replace["outlines"],
            progress=progress,
        )
        seconds["vectorize"] = time.perf_counter() - started
    finally:
        if client is not None:
            from pipeline.runner import close_cluster

            close_cluster(client, cluster)

    started = time.perf_counter()
    render_preview(
        image,
        paths["preview"],
        vectors=paths["outlines"],
        labels=paths["store"],
        overwrite=replace["preview"],
    )
    seconds["preview"] = time.perf_counter() - started

    started = time.perf_counter()
    scores = evaluate(paths["outlines"], truth, mask=paths["store"])
    seconds["evaluate"] = time.perf_counter() - started
    tmp = paths["scores"].with_name(f".{paths['scores'].name}.tmp")
    tmp.write_text(scores.to_json() + "\n", encoding="utf-8")
    tmp.replace(paths["scores"])

    objects = scores.objects
    pixel: dict[str, Any] = next(iter((scores.pixels or {}).values()), {})
    report = {
        "image": str(image),
        "truth": str(truth),
        "model": str(model),
        "outputs": {key: str(path) for key, path in paths.items()},
        "seconds": {key: round(value, 2) for key, value in seconds.items()},
        "features": vectorized.to_dict().get("features"),
        "predict": predicted.to_dict(),
        "object_f1": None if objects is None else objects.f1,
        "pixel_iou": pixel.get("iou"),
        "scores": scores.to_dict(),
        "table": scores.table(),
    }
    tmp = out / ".demo.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(out / "demo.json")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo from the command line and print where everything went."""
    from pipeline.errors import GigasegError

    parser = argparse.ArgumentParser(prog="python -m workflows.demo", description=__doc__)
    parser.add_argument("--out", default="out", help="output folder (out)")
    parser.add_argument("--model", default=str(SAMPLE / "model" / "buildings.safetensors"))
    parser.add_argument(
        "--workers", type=int, default=None, help="Dask workers (0: in-process; default: auto)"
    )
    parser.add_argument("--tile", type=int, default=512, help="prediction tile (512)")
    parser.add_argument(
        "--tta", type=int, default=DEMO_TTA, choices=[1, 2, 4, 8],
        help=f"test-time augmentation transforms ({DEMO_TTA})",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace any existing outputs")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        report = run_demo(
            args.out,
            model=args.model,
            tile=args.tile,
            tta=args.tta,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except (GigasegError, OSError) as exc:
        print(f"demo: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    outputs = report["outputs"]
    print(report["table"])
    print(f"store:    {outputs['store']}  (probabilities + labels, Zarr)")
    print(f"outlines: {outputs['outlines']}  ({report['features']} buildings, GeoJSON EPSG:4326)")
    print(f"preview:  {outputs['preview']}")
    print(f"scores:   {outputs['scores']}")
    f1 = report["object_f1"]
    iou = report["pixel_iou"]
    print(
        f"object F1 (IoU >= 0.5) against the {report['scores']['counts'].get('true')} real "
        f"footprints: {f1:.3f}; pixel IoU {iou:.3f}; "
        f"{time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
