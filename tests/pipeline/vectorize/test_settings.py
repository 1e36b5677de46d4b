"""Vectorize's options: one frozen settings object, passed whole, declared once."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import RunnerSettings, default_of
from pipeline.vectorize import VectorizeSettings, vectorize
from workflows.commands import vectorize as command
from workflows.commands.options import flag_of, settings_from

from .helpers import blobs, write_geotiff


def test_settings_passed_whole_equal_the_same_options_by_name(tmp_path: Path) -> None:
    labels = write_geotiff(tmp_path / "labels.tif", blobs((300, 260), seed=7))
    settings = VectorizeSettings(min_area=3.0, simplify=0.5, fill_holes=2.0, chunk=128)
    whole = vectorize(labels, tmp_path / "whole.geojson", settings, workers=0, progress=False)
    named = vectorize(
        labels, tmp_path / "named.geojson", min_area=3.0, simplify=0.5, fill_holes=2.0,
        chunk=128, workers=0, progress=False,
    )  # fmt: skip
    assert whole.chunks == named.chunks == 9
    assert whole.features == named.features > 0
    text = (tmp_path / "whole.geojson").read_text()
    assert text == (tmp_path / "named.geojson").read_text()
    # a named option is applied on top of the object
    again = vectorize(
        labels, tmp_path / "bigger.geojson", settings, min_area=10**6, workers=0, progress=False
    )
    assert again.features == 0


def test_every_option_is_checked_once_on_creation() -> None:
    with pytest.raises(ConfigError, match=r"chunk must be a positive number of pixels, got 0"):
        VectorizeSettings(chunk=0)
    with pytest.raises(ConfigError, match=r"reach must be a finite number >= 0, got -2"):
        VectorizeSettings(reach=-2)
    with pytest.raises(ConfigError, match=r"--instances 'watershed' is not one of"):
        VectorizeSettings(instances="watershed")
    with pytest.raises(ConfigError, match=r"threshold must be between 0 and 1, got -0.5"):
        VectorizeSettings(threshold=-0.5)
    with pytest.raises(ConfigError, match=r"did you mean 'min_area'"):
        vectorize("unused.tif", "o.geojson", min_aera=3)
    assert VectorizeSettings(classes="building, 2").classes == ("building", "2")
    with pytest.raises(AttributeError):
        VectorizeSettings().min_area = 1.0  # type: ignore[misc]


def test_the_command_line_options_are_derived_from_the_settings() -> None:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["in.tif", "--out", "o.geojson"])
    for item in fields(VectorizeSettings):
        if flag_of(item) is not None:
            assert getattr(args, item.name) == default_of(VectorizeSettings, item.name), item.name
    assert settings_from(args, VectorizeSettings) == VectorizeSettings()
    args = parser.parse_args(
        ["in.tif", "--out", "o.geojson", "--min-area", "4", "--connectivity", "8",
         "--regularize", "--class", "building", "--workers", "0"]
    )  # fmt: skip
    settings = settings_from(args, VectorizeSettings)
    assert settings == VectorizeSettings(
        min_area=4.0, connectivity=8, regularize=True, classes=("building",)
    )
    assert settings_from(args, RunnerSettings) == RunnerSettings(workers=0)
