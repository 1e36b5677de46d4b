"""Fixtures for workflow tests: a random-weight tiny U-Net, tiny GeoTIFFs, workflow files.

Nothing is trained: a random U-Net gives deterministic, non-trivial outputs, which is all a
test of orchestration needs. The ``slurm`` marker skips cleanly where ``sinfo`` is absent or
no SLURM controller answers.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"


def slurm_available() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        result = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    states = result.stdout.split()
    return result.returncode == 0 and any(s in ("idle", "mix", "alloc") for s in states)


@pytest.fixture(autouse=True)
def _skip_without_slurm(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("slurm") and not slurm_available():
        pytest.skip("needs a running SLURM (sinfo absent or no idle node); see .ci/slurm-up.sh")


def save_tiny_model(
    path: Path, *, in_channels: int = 3, depth: int = 2, base: int = 4, seed: int = 0
) -> Path:
    import torch

    import unet

    torch.manual_seed(seed)
    model = unet.UNet(in_channels=in_channels, classes=1, base=base, depth=depth, norm="none")
    # A random net outputs nearly constant logits; centre and stretch them on a synthetic
    # image so that about half the pixels are labelled and the outlines are not trivial.
    with torch.no_grad():
        sample = torch.from_numpy((synthetic(128, 128, in_channels, seed=0) - 100.0) / 50.0)
        logits = model(sample[None])
        gain = 4.0 / float(logits.std())
        model.head.weight.mul_(gain)
        model.head.bias.copy_((model.head.bias - logits.median()) * gain)
    unet.save(
        model,
        path,
        classes=["building"],
        bands=list(range(1, in_channels + 1)),
        mean=[100.0] * in_channels,
        std=[50.0] * in_channels,
        pixel_size=0.5,
    )
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight 3-band U-Net (base 4, depth 2: alignment 4)."""
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="session")
def deep_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight 3-band U-Net of depth 4 (alignment 16)."""
    return save_tiny_model(tmp_path_factory.mktemp("model") / "deep.safetensors", depth=4)


def synthetic(height: int, width: int, bands: int, seed: int = 1) -> np.ndarray:
    """Smooth blobs plus noise in 0..255 as float32 ``(bands, height, width)``."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    base = (np.sin(rows / 7.0) + np.cos(cols / 5.0)) * 60 + 128
    layers = [np.clip(base + rng.normal(0, 20, base.shape), 0, 255) for _ in range(bands)]
    return np.round(np.stack(layers)).astype(np.float32)


def write_geotiff(
    path: Path, *, height: int = 64, width: int = 80, bands: int = 3, seed: int = 1
) -> Path:
    """A small georeferenced uint8 GeoTIFF with smooth structure (UTM 16N, 0.5 m pixels)."""
    import rasterio
    from affine import Affine

    data = synthetic(height, width, bands, seed).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=height,
        width=width,
        count=bands,
        dtype="uint8",
        crs="EPSG:32616",
        transform=Affine(0.5, 0.0, 733601.0, 0.0, -0.5, 3725139.0),
    ) as dst:
        dst.write(data)
    return path


@pytest.fixture
def geotiff_factory(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "scene.tif", **kwargs: Any) -> Path:
        return write_geotiff(tmp_path / "data" / name, **kwargs)

    return make


@pytest.fixture
def write_workflow(tmp_path: Path) -> Callable[..., Path]:
    """Write a workflow mapping as YAML into tmp_path and return its path."""

    def write(data: dict[str, Any], name: str = "workflow.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def local_client() -> Iterator[Any]:
    """One small LocalCluster shared by the workflow tests (2 workers x 1 thread)."""
    from distributed import Client, LocalCluster

    from pipeline.runner import environ_kept

    with environ_kept():  # SLURM jobs submitted later must not inherit the workers' settings
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit="2GiB",
        )
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def read_store(store: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return a store's (probabilities, labels) arrays."""
    import zarr

    group = zarr.open_group(str(store), mode="r")
    return np.asarray(group["probabilities"][...]), np.asarray(group["labels"][...])


def ledger(store: Path) -> np.ndarray:
    """A store's tile ledger (0 pending, 1 done, 2 skipped), or an empty array if absent."""
    import zarr

    try:
        return np.asarray(zarr.open_array(str(store / "tiles"), mode="r")[...])
    except Exception:  # the store is being created
        return np.zeros(0, np.uint8)


def read_features(path: Path) -> list[tuple[str, str]]:
    """GeoJSON features as sorted (geometry, properties) JSON strings, for equality checks."""
    import json

    data = json.loads(path.read_text())
    return sorted(
        (json.dumps(f["geometry"], sort_keys=True), json.dumps(f["properties"], sort_keys=True))
        for f in data["features"]
    )


def save_smooth_model(
    path: Path, *, mean: float, std: float, cut: float, invert: bool = False, depth: int = 3
) -> Path:
    """A 1-band stand-in U-Net that labels smooth regions brighter (or darker) than ``cut``.

    Every convolution averages its inputs, so the network computes a smoothed, rectified
    brightness ``s`` of ``(raw - mean) / std``; the head labels ``s > cut`` (``s < cut`` when
    ``invert``). Unlike random weights it gives blob-like masks, so vectorizing the example
    outputs is quick and their outlines are meaningful (bright roofs, dark tissue).
    """
    import torch

    import unet

    model = unet.UNet(in_channels=1, classes=1, base=4, depth=depth, norm="none")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                weight = module.weight
                if isinstance(module, torch.nn.ConvTranspose2d):
                    fan_in = weight.shape[0]  # stride == kernel: one tap per input channel
                else:
                    fan_in = weight.shape[1] * weight.shape[2] * weight.shape[3]
                weight.fill_(1.0 / fan_in)
                if module.bias is not None:
                    module.bias.zero_()
        gain = -8.0 if invert else 8.0
        model.head.weight.fill_(gain / model.head.weight.shape[1])
        model.head.bias.fill_(-gain * cut)
    unet.save(model, path, classes=["object"], bands=[1], mean=[mean], std=[std])
    return path
