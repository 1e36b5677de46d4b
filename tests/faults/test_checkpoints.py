"""Model files: telling formats apart without false positives, and headers that lie.

A safetensors file starts with the 8-byte little-endian length of its JSON header, so its
first byte is that length's low byte -- 0x80 for 1 in 32 header lengths (safetensors pads the
header to 8 bytes), which is also the first byte of every pickle. A valid checkpoint must load;
pickles and PyTorch zip files are still refused, without a byte of them being unpickled.

A header whose architecture asks for far more weights than the file holds (an edited header,
or the wrong file) must be refused by comparing sizes first, not after allocating the model.
"""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import unet
from pipeline.errors import CheckpointError

TINY = {"in_channels": 1, "classes": 1, "base": 2, "depth": 1, "norm": "none"}


def header_length(path: Path) -> int:
    return int(struct.unpack("<Q", path.read_bytes()[:8])[0])


def test_a_safetensors_header_length_starting_with_0x80_is_not_a_pickle(tmp_path: Path) -> None:
    model = unet.UNet(**TINY)
    hits = []
    for length in range(1, 257):  # class-name lengths: 8 of 256 give a first byte of 0x80
        path = tmp_path / f"m{length}.safetensors"
        unet.save(model, path, classes=["c" * length])
        if path.read_bytes()[0] == 0x80:
            hits.append(path)
        else:
            path.unlink()
    assert len(hits) == 8
    for path in hits:
        loaded, metadata = unet.load(path)
        assert header_length(path) % 256 == 0x80
        assert len(metadata.classes[0]) in range(1, 257)
        for name, tensor in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], tensor)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_raw_pickles_of_every_protocol_are_still_refused(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "weights.safetensors"
    path.write_bytes(pickle.dumps({"w": list(range(50_000))}, protocol=protocol))
    with pytest.raises(CheckpointError, match=r"pickle-based PyTorch checkpoint"):
        unet.load(path)


def test_torch_zip_and_legacy_checkpoints_are_still_refused(tmp_path: Path) -> None:
    state = unet.UNet(**TINY).state_dict()
    zipped, legacy = tmp_path / "zip.pt", tmp_path / "legacy.pt"
    torch.save(state, zipped)
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    for path in (zipped, legacy):
        with pytest.raises(CheckpointError, match=r"pickle-based PyTorch checkpoint"):
            unet.load(path)


def test_a_zip_that_is_not_a_torch_checkpoint_is_not_called_a_pickle(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "notes.safetensors"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match=r"is not a safetensors checkpoint") as caught:
        unet.load(path)
    assert "pickle" not in str(caught.value)


def test_a_corrupt_file_starting_with_0x80_is_not_called_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    unet.save(unet.UNet(**TINY), path, classes=["x"])
    raw = bytearray(path.read_bytes())
    raw[0], raw[1] = 0x80, 0x02  # a PROTO 2 lookalike, then a length that overruns the file
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"is not a safetensors checkpoint") as caught:
        unet.load(path)
    assert "pickle" not in str(caught.value)


def rewrite_architecture(path: Path, **changes: int) -> None:
    raw = path.read_bytes()
    size = header_length(path)
    header = json.loads(raw[8 : 8 + size])
    meta = json.loads(header["__metadata__"]["gigaseg"])
    meta["architecture"].update(changes)
    header["__metadata__"]["gigaseg"] = json.dumps(meta)
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    path.write_bytes(struct.pack("<Q", len(body)) + body + raw[8 + size :])


def test_a_header_asking_for_huge_weights_is_refused_before_allocating(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    unet.save(unet.UNet(**{**TINY, "in_channels": 3}), path, classes=["x"])
    rewrite_architecture(path, base=2048, depth=5)  # about 2 TB of float32 weights
    # In a child process whose address space is capped 2 GB above what it uses after imports:
    # building the model first would fail there (or swap the machine without the cap).
    code = f"""
import resource, sys
import unet
from pipeline.errors import CheckpointError
used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + 2 * 1024**3, resource.RLIM_INFINITY))
try:
    unet.load({str(path)!r})
except CheckpointError as exc:
    print(exc)
    sys.exit(3)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 3, result.stderr[-2000:]
    line = result.stdout.strip()
    assert "\n" not in line
    assert "weights do not match the header's architecture, which needs" in line
    assert " GB of weights (the file holds " in line and "KB" in line


def test_gigaseg_predict_with_a_huge_header_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """The same model through the command line: one line on stderr, exit 1, no store."""
    path = tmp_path / "m.safetensors"
    unet.save(unet.UNet(**{**TINY, "in_channels": 3}), path, classes=["x"])
    rewrite_architecture(path, base=2048, depth=5)
    image = tmp_path / "a.npy"
    import numpy as np

    np.save(image, np.zeros((3, 32, 32), np.uint8))
    store = tmp_path / "out.zarr"
    code = f"""
import resource, sys
from workflows.cli import main
used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + 2 * 1024**3, resource.RLIM_INFINITY))
sys.exit(main(["predict", {str(image)!r}, "--model", {str(path)!r}, "--out", {str(store)!r},
               "--workers", "0", "--no-progress"]))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("gigaseg predict: error: ")
    assert "weights do not match the header's architecture, which needs" in lines[0]
    assert not store.exists()


def test_a_tensor_outside_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    unet.save(unet.UNet(**TINY), path, classes=["x"])
    path.write_bytes(path.read_bytes()[:-16])  # truncated copy
    with pytest.raises(CheckpointError, match=r"lies outside the file.*truncated or corrupt"):
        unet.load(path)
