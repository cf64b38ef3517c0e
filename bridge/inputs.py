"""Model inputs: ``--input-shape`` and ``--example-inputs`` for convert, fixed sample sets for verify.

Verify's inputs are stored as one ``.npz`` whose arrays carry a leading sample axis
(``[samples, *shape]``), in the source's layout, keyed by source input name.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from bridge.errors import InputError
from bridge.signature import Signature, TensorSpec

_SHAPE = re.compile(r"^(?P<name>[^:\s]+):(?P<dims>\d+(,\d+)*)$")


@dataclass(frozen=True)
class ExampleInputs:
    """The inputs a user described for convert: a concrete shape and dtype each, in the model's order."""

    specs: tuple[TensorSpec, ...]
    named: bool = True
    """False when the names were made up (tensors passed positionally)."""
    origin: str = ""
    """Where they came from, for error messages: ``--input-shape``, a file, ``example_inputs``."""

    def check_against(self, signature: Signature, model: Path) -> None:
        """Refuse specs whose count, names, ranks or dtypes do not fit the model's inputs."""
        origin = self.origin or "the example inputs"
        if len(self.specs) != len(signature.inputs):
            expected = ", ".join(s.name for s in signature.inputs)
            raise InputError(f"{origin}: {len(self.specs)} inputs given but {model} takes {len(signature.inputs)} ({expected})")
        for given, spec in zip(self.specs, signature.inputs, strict=True):
            if self.named and given.name != spec.name:
                names = ", ".join(s.name for s in signature.inputs)
                raise InputError(f"{origin}: input {given.name!r} is not an input of {model}; its inputs are {names}")
            _check_fits(origin, given.name, tuple(int(d) for d in given.shape if isinstance(d, int)), given.dtype, spec,
                        samples=False)


def _check_fits(origin: str, name: str, shape: Sequence[int], dtype: str, spec: TensorSpec, *, samples: bool = True) -> None:
    if len(shape) != spec.rank or any(isinstance(d, int) and d != s for d, s in zip(spec.shape, shape, strict=False)):
        model = [d if isinstance(d, int) else "N" for d in spec.shape]
        fix = (f"give one sample shaped {model} or several as [samples, {', '.join(map(str, model))}]" if samples
               else f"give it shape {model}")
        raise InputError(f"{origin}: input {name!r} has shape {list(shape)} but the model expects {model}; {fix}")
    if _kind(dtype) != _kind(spec.dtype):
        raise InputError(f"{origin}: input {name!r} is {dtype} but the model expects {spec.dtype}; save it as {spec.dtype}")


def _kind(dtype: str) -> str:
    return "float" if "float" in dtype else "bool" if dtype == "bool" else "int"


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``NAME:1,3,224,224`` -> (name, shape)."""
    match = _SHAPE.match(text.strip())
    if not match:
        raise InputError(f"--input-shape {text!r}: expected NAME:D0,D1,... with positive integers, e.g. x:1,3,224,224")
    shape = tuple(int(d) for d in match["dims"].split(","))
    if any(d <= 0 for d in shape):
        raise InputError(f"--input-shape {text!r}: dimensions must be positive")
    return match["name"], shape


def load_npz(path: Path) -> dict[str, NDArray[Any]]:
    """Read an ``.npz`` without pickles; InputError for anything else."""
    if not path.is_file():
        raise InputError(f"{path}: no such inputs file")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not an .npz file (save inputs with numpy.savez)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: unreadable .npz ({exc}); save inputs with numpy.savez, no object arrays") from exc


def parse_example_inputs(example_inputs: Any, input_shapes: Mapping[str, Sequence[int]] | None) -> ExampleInputs | None:
    """ExampleInputs from an npz path, a dict of arrays, a tuple of tensors, or `input_shapes`."""
    if example_inputs is not None and input_shapes:
        raise InputError("give --input-shape or --example-inputs, not both")
    if input_shapes:
        return ExampleInputs(tuple(TensorSpec(name, tuple(int(d) for d in shape), "float32")
                                   for name, shape in input_shapes.items()), origin="--input-shape")
    if example_inputs is None:
        return None
    if isinstance(example_inputs, (str, Path)):
        arrays = load_npz(Path(example_inputs))
        return ExampleInputs(tuple(TensorSpec(n, tuple(a.shape), a.dtype.name) for n, a in arrays.items()),
                             origin=str(example_inputs))
    if isinstance(example_inputs, Mapping):
        return ExampleInputs(tuple(TensorSpec(str(n), tuple(int(d) for d in a.shape), _dtype_name(a))
                                   for n, a in example_inputs.items()), origin="example_inputs")
    if isinstance(example_inputs, Sequence):
        return ExampleInputs(tuple(TensorSpec(f"input_{i}", tuple(int(d) for d in a.shape), _dtype_name(a))
                                   for i, a in enumerate(example_inputs)), named=False, origin="example_inputs")
    raise InputError(f"example_inputs: expected an .npz path, a dict of arrays or a tuple of tensors, not {type(example_inputs).__name__}")


def _dtype_name(array: Any) -> str:
    return str(array.dtype).removeprefix("torch.")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_npz(target: Path | BinaryIO, arrays: Mapping[str, NDArray[Any]]) -> None:
    """``numpy.savez`` of named arrays (no pickles: object arrays are refused by the reader)."""
    np.savez(target, **arrays)  # type: ignore[arg-type]  # numpy's stub reserves allow_pickle among **kwds


def save_npz(arrays: Mapping[str, NDArray[Any]], path: Path) -> str:
    """Save `arrays` as an ``.npz`` atomically (creating its directory); return the file's sha256."""
    from bridge.staging import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: write_npz(handle, arrays))
    return file_sha256(path)


def generate(signature: Signature, *, seed: int, samples: int, int_high: int,
             int_highs: Mapping[str, int] | None = None, batch: int = 1, length: int | None = None) -> dict[str, NDArray[Any]]:
    """Reproducible inputs for every source input: ``[samples, *shape]`` arrays.

    Floats are standard normal; integers are uniform in ``[0, high)`` where high is the
    model's embedding size when known (`int_highs`), else `int_high`; an integer input named
    ``attention_mask`` is ones then a padded tail of zeros (at least one real token); a symbolic
    first dimension becomes `batch`, other symbolic dims `length` (the source's example length, a
    dynamic sequence axis), else 1.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, NDArray[Any]] = {}
    for spec in signature.inputs:
        dims = [d if isinstance(d, int) and d > 0 else (batch if i == 0 else length or 1) for i, d in enumerate(spec.shape)]
        shape = (samples, *dims)
        dtype = np.dtype(spec.dtype) if spec.dtype != "bfloat16" else np.dtype("float32")
        if dtype.kind == "f":
            out[spec.name] = rng.standard_normal(shape).astype(dtype)
            if spec.dtype == "bfloat16":  # float32 holding bfloat16 values: every representation sees the same numbers
                out[spec.name] = round_to_bfloat16(out[spec.name])
        elif dtype.kind == "b":
            out[spec.name] = rng.integers(0, 2, shape).astype(bool)
        elif spec.name == "attention_mask" and len(dims) >= 1:
            # Real tokens then padding, as a tokenizer pads a batch: at least one real token per row.
            length = dims[-1]
            real = rng.integers(1, length + 1, (*shape[:-1], 1))
            out[spec.name] = (np.arange(length) < real).astype(dtype)
        else:
            high = (int_highs or {}).get(spec.name, int_high)
            out[spec.name] = rng.integers(0, max(high, 1), shape).astype(dtype)
    return out


def check_inputs(arrays: Mapping[str, NDArray[Any]], signature: Signature, origin: Path) -> dict[str, NDArray[Any]]:
    """Validate a verify inputs file against the source signature; returns ``[samples, *shape]`` arrays.

    Each array is either one sample, shaped exactly like the model's input, or several with a
    leading sample axis; which one is decided by its rank against the input's.
    """
    expected = {s.name for s in signature.inputs}
    missing, extra = expected - set(arrays), set(arrays) - expected
    if missing or extra:
        raise InputError(
            f"{origin}: input names {sorted(arrays)} do not fit the model's inputs {sorted(expected)}; "
            "key the arrays by the source input names"
        )
    stacked: dict[str, NDArray[Any]] = {}
    for spec in signature.inputs:
        array = arrays[spec.name]
        if array.ndim == spec.rank:
            array = array[np.newaxis]  # one sample, shaped like the model's input
        elif array.ndim != spec.rank + 1:
            model = [d if isinstance(d, int) else "N" for d in spec.shape]
            raise InputError(
                f"{origin}: input {spec.name!r} has shape {list(array.shape)}; give one sample shaped {model} "
                f"or several as [samples, {', '.join(map(str, model))}]"
            )
        _check_fits(str(origin), spec.name, array.shape[1:], array.dtype.name, spec)
        stacked[spec.name] = array
    counts = {a.shape[0] for a in stacked.values()}
    if len(counts) != 1 or 0 in counts:
        raise InputError(f"{origin}: the inputs hold different numbers of samples ({sorted(counts)}); give each the same")
    return {s.name: stacked[s.name].astype(np.dtype(s.dtype) if s.dtype != "bfloat16" else np.float32, copy=False)
            for s in signature.inputs}


def round_to_bfloat16(values: NDArray[Any]) -> NDArray[Any]:
    """float32 values rounded to the nearest bfloat16 (ties to even), still as float32: numpy has no bfloat16."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)
