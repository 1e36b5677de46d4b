"""Fixtures for the fault suite: the workflow tests' tiny models and GeoTIFF factory."""

from __future__ import annotations

from tests.workflows.conftest import geotiff_factory, local_client, tiny_model

__all__ = ["geotiff_factory", "local_client", "tiny_model"]
