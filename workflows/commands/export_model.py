"""``gigaseg export-model``: a checkpoint as TorchScript or ONNX, metadata embedded."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["HELP", "add_arguments", "main"]

HELP = "export a gigaseg checkpoint to TorchScript or ONNX (same outputs, metadata embedded)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options."""
    parser.add_argument("checkpoint", metavar="CKPT", help="a gigaseg .safetensors checkpoint")
    parser.add_argument("--format", required=True, choices=["torchscript", "onnx"])
    parser.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing FILE")


def main(args: argparse.Namespace) -> int:
    """Export the checkpoint."""
    import unet
    from pipeline.errors import OutputExistsError

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    model, metadata = unet.load(args.checkpoint)
    unet.export(model, metadata, out, format=args.format)
    print(f"wrote {args.format} model to {out} (halo {model.halo}, classes {metadata.classes})")
    return 0
