"""Generated inputs and inputs files: reproducible, bounded, checked against the signature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bridge.errors import InputError
from bridge.inputs import check_inputs, generate, load_npz, parse_example_inputs, parse_input_shape, save_npz
from bridge.signature import Signature, TensorSpec

SIGNATURE = Signature((TensorSpec("x", ("batch", 3), "float32"), TensorSpec("ids", (1, 5), "int64")), ())


def test_generation_is_reproducible_and_bounded() -> None:
    first = generate(SIGNATURE, seed=3, samples=4, int_high=100, int_highs={"ids": 7})
    second = generate(SIGNATURE, seed=3, samples=4, int_high=100, int_highs={"ids": 7})
    assert first["x"].shape == (4, 1, 3) and first["x"].dtype == np.float32
    assert first["ids"].shape == (4, 1, 5) and 0 <= first["ids"].min() and first["ids"].max() < 7
    assert all(np.array_equal(first[k], second[k]) for k in first)


def test_an_inputs_file_is_checked_against_the_signature(tmp_path: Path) -> None:
    good = {"x": np.zeros((2, 1, 3), np.float32), "ids": np.zeros((2, 1, 5), np.int64)}
    assert set(check_inputs(good, SIGNATURE, tmp_path / "i.npz")) == {"x", "ids"}
    with pytest.raises(InputError, match="do not fit the model's inputs"):
        check_inputs({"x": good["x"]}, SIGNATURE, tmp_path / "i.npz")
    with pytest.raises(InputError, match=r"input 'ids' has shape \[1, 6\].*one sample shaped \[1, 5\] or several as \[samples, 1, 5\]"):
        check_inputs({**good, "ids": np.zeros((2, 1, 6), np.int64)}, SIGNATURE, tmp_path / "i.npz")
    with pytest.raises(InputError, match=r"has shape \[2, 2, 1, 5\]"):
        check_inputs({**good, "ids": np.zeros((2, 2, 1, 5), np.int64)}, SIGNATURE, tmp_path / "i.npz")


def test_one_sample_shaped_like_the_model_is_a_set_of_one(tmp_path: Path) -> None:
    one = {"x": np.ones((1, 3), np.float32), "ids": np.zeros((1, 5), np.int64)}
    stacked = check_inputs(one, SIGNATURE, tmp_path / "i.npz")
    assert stacked["x"].shape == (1, 1, 3) and stacked["ids"].shape == (1, 1, 5)
    with pytest.raises(InputError, match="different numbers of samples"):
        check_inputs({"x": np.ones((3, 1, 3), np.float32), "ids": np.zeros((2, 1, 5), np.int64)}, SIGNATURE, tmp_path / "i")


def test_save_and_load_round_trip_with_digest(tmp_path: Path) -> None:
    arrays = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    digest = save_npz(arrays, tmp_path / "sub" / "i.npz")
    assert len(digest) == 64
    assert np.array_equal(load_npz(tmp_path / "sub" / "i.npz")["x"], arrays["x"])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not an .npz file"):
        load_npz(tmp_path / "bad.npz")


def test_example_inputs_and_input_shapes() -> None:
    assert parse_input_shape("x:1,3,224,224") == ("x", (1, 3, 224, 224))
    with pytest.raises(InputError, match="expected NAME:D0,D1"):
        parse_input_shape("x:1,a")
    specs = parse_example_inputs(None, {"x": (1, 10)})
    assert specs is not None and specs.specs == (TensorSpec("x", (1, 10), "float32"),)
    positional = parse_example_inputs((np.zeros((1, 2), np.float16),), None)
    assert positional is not None and not positional.named and positional.specs[0].dtype == "float16"
    with pytest.raises(InputError, match="not both"):
        parse_example_inputs({"x": np.zeros(1)}, {"x": (1,)})
