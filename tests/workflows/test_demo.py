import json

import pytest

from workflows.demo import SAMPLE, main

MODEL = SAMPLE / "model" / "buildings.safetensors"


@pytest.mark.skipif(not MODEL.is_file(), reason="the demo model is not built yet")
def test_demo_runs_the_main_job_on_the_sample(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--out", str(out), "--workers", "0", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for name in ("sample.zarr", "buildings.geojson", "preview.png", "scores.json"):
        assert (out / name).exists(), name
        assert str(out / name) in printed
    report = json.loads((out / "demo.json").read_text())
    outlines = json.loads((out / "buildings.geojson").read_text())
    assert (
        outlines["type"] == "FeatureCollection" and len(outlines["features"]) == report["features"]
    )
    assert (out / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scores = json.loads((out / "scores.json").read_text())
    assert scores["counts"]["true"] == 43
    # the shipped model finds real buildings: its recorded object F1 is reproduced to +-0.1
    recorded = json.loads((SAMPLE / "model" / "metrics.json").read_text())
    whole = recorded["evaluation"]["sample_geotiff.tif"]["whole"]["objects"]["f1"]
    assert scores["objects"]["f1"] == pytest.approx(whole, abs=0.1)
    assert scores["objects"]["f1"] > 0.2
    assert (
        f"object F1 (IoU >= 0.5) against the 43 real footprints: {report['object_f1']:.3f}"
        in printed
    )
    # a second run replaces the demo's own outputs; a foreign file of the same name is kept
    assert main(["--out", str(out), "--workers", "0", "--no-progress"]) == 0
    capsys.readouterr()
    other = tmp_path / "other"
    other.mkdir()
    (other / "preview.png").write_text("mine")
    assert main(["--out", str(other), "--workers", "0", "--no-progress"]) == 1
    assert "was not written by the demo" in capsys.readouterr().err
    assert (other / "preview.png").read_text() == "mine"
