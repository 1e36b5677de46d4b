"""The host encoder (ONNX and card-adapted models): the same stores as activate + to_labels +
to_stored, value for value, in cache-sized blocks."""

import numpy as np
import pytest

from pipeline.infer import predictor
from pipeline.infer.predictor import NonFiniteOutputError, activate, encode_host
from pipeline.stitch.assemble import to_labels
from pipeline.store.encoding import to_stored


def _reference(values, activation, dtype, threshold, activated=False):
    """The path before the host encoder: whole-batch activation, labels, encoding."""
    with np.errstate(all="ignore"):  # overflow to +-inf in softmax's subtraction
        probs = values if activated else activate(values, activation)
    bad = int(probs.size - np.count_nonzero(np.isfinite(probs)))
    if bad:
        raise NonFiniteOutputError(bad)
    labels = np.stack([to_labels(p, activation, threshold) for p in probs])
    return to_stored(probs, dtype), labels


def _logits(shape, seed):
    """Logits over many scales, with ±huge, ±0 and values on exact sigmoid levels."""
    rng = np.random.default_rng(seed)
    scale = rng.choice([1e-3, 1.0, 8.0, 100.0, 1e6, 3e38], shape)
    logits = np.clip(rng.standard_normal(shape) * scale, -3.4e38, 3.4e38).astype(np.float32)
    flat = logits.reshape(-1)
    flat[:8] = [0.0, -0.0, 3.4e38, -3.4e38, np.inf, -np.inf, 1e-45, -1e-45]
    return logits


@pytest.fixture(params=[1000, predictor.HOST_BLOCK], ids=["small-blocks", "default-blocks"])
def block(request, monkeypatch):
    """Blocks of 1000 pixels (many per image, the last one partial) and the default."""
    monkeypatch.setattr(predictor, "HOST_BLOCK", request.param)
    return request.param


@pytest.mark.parametrize(
    ("classes", "activation"), [(1, "sigmoid"), (2, "sigmoid"), (3, "softmax"), (7, "softmax")]
)
@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32"])
def test_host_encoding_equals_the_whole_batch_path(block, classes, activation, dtype):
    # 181 x 233 pixels is not a multiple of the block (nor of the block // classes)
    logits = _logits((3, classes, 181, 233), seed=classes)
    if activation == "softmax":
        logits[np.isinf(logits)] = 0.0  # inf - inf is NaN: that case is the error test's
    for threshold in (0.5, 0.3, 0.0, 1.0):
        stored, labels = encode_host(logits, activation, dtype, threshold)
        want_stored, want_labels = _reference(logits, activation, dtype, threshold)
        assert stored.dtype == want_stored.dtype and stored.shape == want_stored.shape
        assert labels.dtype == np.uint8 and labels.shape == want_labels.shape
        assert np.array_equal(stored, want_stored), threshold
        assert np.array_equal(labels, want_labels), threshold


def test_a_probability_exactly_at_the_threshold_is_foreground():
    logits = _logits((1, 1, 64, 64), seed=5)
    probs = activate(logits, "sigmoid")
    for value in (0.5, float(probs[0, 0, 10, 10]), float(probs[0, 0, 20, 3])):
        _, labels = encode_host(logits, "sigmoid", "uint8", value)
        _, want = _reference(logits, "sigmoid", "uint8", value)
        assert np.array_equal(labels, want)
        assert labels[0][probs[0, 0] == np.float32(value)].all()
    _, labels = encode_host(np.zeros((1, 1, 4, 4), np.float32), "sigmoid", "uint8", 0.5)
    assert labels.all()  # logit 0 is p = 0.5 exactly


def test_ties_between_classes_keep_the_first():
    logits = np.zeros((2, 4, 9, 9), np.float32)
    logits[:, 2, :, :4] = 5.0
    logits[:, 3, :, :4] = 5.0
    _, labels = encode_host(logits, "softmax", "uint8")
    assert (labels[:, :, :4] == 2).all() and (labels[:, :, 4:] == 0).all()


@pytest.mark.parametrize(("classes", "activation"), [(1, "sigmoid"), (3, "softmax")])
def test_nan_fails_the_batch_with_the_count_of_the_whole_path(block, classes, activation):
    logits = _logits((2, classes, 300, 301), seed=9)
    logits[np.isinf(logits)] = 0.0
    logits[0, 0, 5, 7] = np.nan
    logits[1, -1, 299, 1:4] = np.nan  # in another block, the last one
    with pytest.raises(NonFiniteOutputError) as found:
        _reference(logits, activation, "uint8", 0.5)
    with pytest.raises(NonFiniteOutputError) as got:
        encode_host(logits, activation, "uint8", 0.5)
    assert got.value.count == found.value.count > 0


def test_an_already_applied_output_is_used_as_it_is():
    rng = np.random.default_rng(3)
    probs = rng.random((2, 3, 50, 70), dtype=np.float32) * 1.2 - 0.1  # clipped for uint8
    for dtype in ("uint8", "float32"):
        stored, labels = encode_host(probs, "softmax", dtype, activated=True)
        want_stored, want_labels = _reference(probs, "softmax", dtype, 0.5, activated=True)
        assert np.array_equal(stored, want_stored) and np.array_equal(labels, want_labels)
    huge = np.full((1, 2, 8, 8), 3e38, np.float32)  # finite, though the sum overflows
    stored, _ = encode_host(huge, "softmax", "uint8", activated=True)
    assert (stored == 255).all()
    probs[0, 1, 2, 2] = np.inf
    with pytest.raises(NonFiniteOutputError):
        encode_host(probs, "softmax", "uint8", activated=True)
