import json

import pytest
import yaml

import unet
from pipeline.read import redact
from tests.pipeline.sample.synthetic import squares_scene
from workflows.cli import main


@pytest.fixture
def config(tmp_path):
    scene = tmp_path / "data"
    scene.mkdir()
    squares_scene(scene, size=96)
    document = {
        "data": {
            "images": ["data/scene.tif"],
            "labels": ["data/labels.geojson"],
            "classes": ["building"],
            "patch": 32,
            "holdout": "cols:0.7-1.0",
            "statistics_samples": 4,
        },
        "model": {"base": 4, "depth": 2},
        "train": {"epochs": 2, "steps_per_epoch": 3, "batch": 2, "threads": 1, "lr": 0.01},
        "out": "run",
        "export": "model/demo.safetensors",
        "metrics": "model/metrics.json",
        "evaluate": {"min_area": 1.0},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_train_command_end_to_end_and_resume(config, capsys):
    assert main(["train", str(config), "--no-progress"]) == 0
    out = capsys.readouterr().out
    root = config.parent
    assert "trained 6 steps" in out
    assert f"model: {root / 'model/demo.safetensors'}" in out
    assert "scene.tif [holdout]: pixel IoU" in out and "object F1" in out
    metrics = json.loads((root / "model/metrics.json").read_text())
    assert metrics["train"]["steps"] == 6
    holdout = metrics["evaluation"]["scene.tif"]["holdout"]
    assert set(holdout) == {"pixels", "objects"}
    assert holdout["objects"]["tp"] + holdout["objects"]["fn"] > 0  # band holds true objects
    _, meta = unet.load(root / "model/demo.safetensors")
    assert meta.bands == (1,) and meta.pixel_size == 1.0 and len(meta.mean) == 1
    assert meta.extra["data"]["holdout"] == {"axis": "cols", "start": 0.7, "stop": 1.0}
    # a second run into the same directory is refused; --resume continues to more epochs
    assert main(["train", str(config), "--no-progress"]) == 1
    assert "already holds a training run" in capsys.readouterr().err
    last = root / "run" / "last.safetensors"
    code = main(["train", str(config), "--resume", str(last), "--epochs", "3", "--no-progress"])
    assert code == 0
    assert "trained 9 steps" in capsys.readouterr().out
    history = json.loads((root / "run" / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2, 3]


def test_train_flags_without_a_config(tmp_path, capsys):
    tif, labels, _ = squares_scene(tmp_path, size=64)
    code = main(
        [
            "train", "--image", str(tif), "--labels", str(labels), "--patch", "32",
            "--holdout", "rows:0.5-1.0", "--epochs", "1", "--steps-per-epoch", "2",
            "--batch", "2", "--threads", "1", "--base", "4", "--depth", "2",
            "--out", str(tmp_path / "run"), "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "best.safetensors").is_file()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"data": {"images": ["x.tif"]}}, "data.labels is required"),
        (
            {"data": {"images": ["x.tif"], "labels": ["x.geojson"]}, "out": "r"},
            "x.tif does not exist",
        ),
        ({"dat": {}}, "unknown sections"),
        ({"data": {"images": ["a"], "labels": ["b"]}, "train": {"epoch": 1}}, "unknown train keys"),
    ],
)
def test_config_errors_are_one_line(tmp_path, capsys, document, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(document))
    assert main(["train", str(path)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("gigaseg train: error:")


def test_evaluate_command(tmp_path, capsys):
    _, labels, _ = squares_scene(tmp_path, size=64)
    target = tmp_path / "scores.json"
    assert main(["evaluate", str(labels), str(labels), "--json", str(target)]) == 0
    out = capsys.readouterr().out
    assert "object F1 (IoU >= 0.5)" in out and f"scores: {target}" in out
    assert json.loads(target.read_text())["objects"]["f1"] == 1.0
    assert main(["evaluate", str(tmp_path / "none.geojson"), str(labels)]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_train_from_signed_urls_keeps_no_secret(tmp_path, http_server, monkeypatch, capsys):
    from tests.servers import copy_to

    tif, labels, _ = squares_scene(tmp_path, size=64)
    copy_to(http_server.root, tif)
    copy_to(http_server.root, labels)
    image_url = http_server.url(f"{tif.name}?X-Amz-Signature=s3cr3tsig&X-Amz-Date=1")
    labels_url = http_server.url(f"{labels.name}?token=t0ken")
    argv = [
        "train", "--image", image_url, "--labels", labels_url, "--patch", "32",
        "--holdout", "rows:0.5-1.0", "--epochs", "1", "--steps-per-epoch", "1",
        "--batch", "2", "--threads", "1", "--base", "4", "--depth", "2",
        "--out", str(tmp_path / "run"), "--no-progress",
    ]  # fmt: skip
    monkeypatch.setattr("sys.argv", ["gigaseg", *argv])  # the command line is recorded
    assert main(argv) == 0, capsys.readouterr().err
    assert http_server.counter.requests  # really read from the server
    _, meta = unet.load(tmp_path / "run" / "best.safetensors")
    assert meta.extra["data"]["images"] == [redact(image_url)]
    assert "X-Amz-Signature=REDACTED" in meta.extra["command"]
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    for path in written:
        data = path.read_bytes()
        assert b"s3cr3tsig" not in data and b"t0ken" not in data, path
    assert "s3cr3tsig" not in capsys.readouterr().out
