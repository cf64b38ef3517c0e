"""The perm convention: artifact = source.transpose(perm)."""

from __future__ import annotations

import numpy as np

from bridge.signature import Signature, TensorSpec, channels_last_perm, compose, invert
from bridge.verification.compare import from_source_layout, to_source_layout


def test_channels_last_perms_by_rank() -> None:
    assert channels_last_perm(3) == (0, 2, 1)
    assert channels_last_perm(4) == (0, 2, 3, 1)
    assert channels_last_perm(5) == (0, 2, 3, 4, 1)
    assert channels_last_perm(2) == (0, 1)


def test_invert_and_compose_round_trip() -> None:
    perm = (0, 2, 3, 1)
    assert compose(perm, invert(perm)) == (0, 1, 2, 3)
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    # Transposing by `first` then by `then` equals transposing by compose(first, then).
    then = (0, 3, 1, 2)
    assert np.array_equal(x.transpose(perm).transpose(then), x.transpose(compose(perm, then)))


def test_layout_mapping_round_trip() -> None:
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8))
    nhwc = from_source_layout(x, (0, 2, 3, 1))
    assert nhwc.shape == (1, 8, 8, 3)
    assert np.array_equal(to_source_layout(nhwc, (0, 2, 3, 1)), x)
    # verify's arrays carry a leading sample axis that the perm leaves in place.
    samples = np.random.default_rng(1).standard_normal((5, 1, 4, 6))
    moved = from_source_layout(samples, (0, 2, 1), leading=1)
    assert moved.shape == (5, 1, 6, 4)
    assert np.array_equal(moved[3], samples[3].transpose(0, 2, 1))
    assert np.array_equal(to_source_layout(moved, (0, 2, 1), leading=1), samples)
    # A rank that does not fit is left alone for the comparison to report.
    assert to_source_layout(samples, (0, 2, 3, 1), leading=1) is samples


def test_source_shape_and_json_round_trip() -> None:
    spec = TensorSpec("x", (1, 224, 224, 3), "float32", source_name="input", perm=(0, 2, 3, 1))
    assert spec.source_shape == (1, 3, 224, 224)
    sig = Signature((spec,), (TensorSpec("y", ("batch", 10), "float32"),))
    again = Signature.from_json(sig.to_json())
    assert again == sig
    assert again.outputs[0].perm == (0, 1)
