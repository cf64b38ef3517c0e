"""JAX sources: what a factory returned, made into one function of named arrays, and saved with ``jax.export``.

A factory (or a live object handed to the library) may return:

- ``(function, inputs)``: a JAX function and its example inputs (a dict name -> array or
  ``jax.ShapeDtypeStruct``, or a list, named ``input_0``...);
- a ``flax.nnx.Module``, alone or as ``(module, inputs)`` (run in eval mode);
- ``(flax.linen.Module, variables)`` or ``(module, variables, inputs)``.

Inputs not returned come from ``--input-shape``/``--example-inputs`` or the factory's
``example_inputs`` attribute. The saved artifact is a ``jax.export`` serialization (StableHLO, no
Python): it takes one dict of arrays keyed by input name and returns a dict keyed by output name
(JAX orders both by name). Verify runs it; the jax -> tf hop reads it; the jax -> onnx hop needs
the Python function again, so it calls the factory the user named (bridge.hops.jax_to_onnx).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import InputError
from bridge.formats import Format
from bridge.inputs import ExampleInputs
from bridge.messages import MaterializeResponse
from bridge.signature import TensorSpec

ARTIFACT = "model.jaxexport"
PLATFORMS = ("cpu", "cuda")
"""Lowered for both, so that one artifact runs where a GPU is present and where it is not."""
ACCEPTED = ("(function, inputs), a flax.nnx.Module or (module, inputs), "
            "(flax.linen.Module, variables) or (module, variables, inputs)")


@dataclass(frozen=True)
class JaxModel:
    """A JAX model made uniform: ``call(*arrays)`` in the order of `specs`, and how it was given."""

    call: Callable[..., Any]
    specs: ExampleInputs
    kind: str
    """``jax_function``, ``flax_nnx`` or ``flax_linen`` (the manifest's source kind)."""


def is_jax_model(obj: Any) -> bool:
    """Whether `obj` looks like one of the accepted JAX forms (without importing JAX when it is not loaded)."""
    if "jax" not in sys.modules:
        return False
    head = obj[0] if isinstance(obj, tuple) and obj else obj
    if "flax" in sys.modules:
        from flax import linen, nnx

        if isinstance(head, (linen.Module, nnx.Module)):
            return True
    return isinstance(obj, tuple) and len(obj) == 2 and callable(obj[0]) and _looks_like_inputs(obj[1]) \
        and not type(obj[0]).__module__.startswith(("torch", "keras", "tensorflow", "transformers"))


def _looks_like_inputs(value: Any) -> bool:
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (list, tuple)) else ()
    return bool(items) and all(hasattr(v, "shape") and hasattr(v, "dtype") for v in items)


def as_jax_model(obj: Any, specs: ExampleInputs | None, origin: str) -> JaxModel:
    """The model `obj` describes, or an InputError naming `origin` and the accepted forms."""
    from flax import linen, nnx

    parts = obj if isinstance(obj, tuple) else (obj,)
    head = parts[0]
    if isinstance(head, nnx.Module) and len(parts) <= 2:
        if hasattr(head, "eval"):
            head.eval()
        return JaxModel(head, _inputs(parts[1] if len(parts) == 2 else None, specs, origin, head.__call__), "flax_nnx")
    if isinstance(head, linen.Module) and len(parts) in (2, 3) and isinstance(parts[1], Mapping) \
            and not _looks_like_inputs(parts[1]):
        module, variables = head, parts[1]

        def apply(*arrays: Any) -> Any:
            return module.apply(variables, *arrays)

        return JaxModel(apply, _inputs(parts[2] if len(parts) == 3 else None, specs, origin, module.__call__), "flax_linen")
    if isinstance(head, linen.Module):
        raise InputError(f"{origin}: a flax.linen module needs its variables: return (module, variables) "
                         "or (module, variables, inputs), with variables = module.init(key, *inputs)")
    if len(parts) == 2 and callable(head) and not isinstance(head, type):
        return JaxModel(head, _inputs(parts[1], specs, origin, head), "jax_function")
    raise InputError(f"{origin}: returned a {_describe(obj)}, not a JAX model; return one of {ACCEPTED}")


def _describe(obj: Any) -> str:
    if isinstance(obj, tuple):
        return "tuple of (" + ", ".join(type(p).__name__ for p in obj) + ")"
    return type(obj).__name__


def _inputs(given: Any, specs: ExampleInputs | None, origin: str, function: Callable[..., Any]) -> ExampleInputs:
    """The inputs in the order the function takes them: returned by the factory, else given on the command line."""
    if given is None:
        if specs is None:
            raise InputError(f"{origin}: the JAX model came without inputs: return (model, {{name: array}}), set "
                             "factory.example_inputs, or give --input-shape NAME:1,28,28,1")
        return specs
    if isinstance(given, Mapping):
        items = list(given.items())
    elif isinstance(given, (list, tuple)):
        items = [(f"input_{i}", v) for i, v in enumerate(given)]
    else:
        raise InputError(f"{origin}: the inputs are a {type(given).__name__}; give a dict name -> array (or a list of arrays)")
    bad = [str(name) for name, value in items if not (hasattr(value, "shape") and hasattr(value, "dtype"))]
    if bad or not items:
        raise InputError(f"{origin}: input {bad[0] if bad else '(none)'!r} is not an array; give each input as an array "
                         "or jax.ShapeDtypeStruct")
    if isinstance(given, Mapping):
        _check_parameters(origin, function, [str(n) for n, _ in items])
    found = ExampleInputs(tuple(TensorSpec(str(n), tuple(int(d) for d in v.shape), str(v.dtype)) for n, v in items),
                          named=isinstance(given, Mapping), origin=origin)
    if specs is not None:  # --input-shape replaces the shapes the factory chose (a size, a dtype)
        return ExampleInputs(specs.specs if specs.named else tuple(
            TensorSpec(s.name, g.shape, g.dtype) for s, g in zip(found.specs, specs.specs, strict=False)),
            named=True, origin=specs.origin)
    return found


def _check_parameters(origin: str, function: Callable[..., Any], names: Sequence[str]) -> None:
    """Dict inputs are passed in order; refuse names that are the function's parameters in another order."""
    try:
        parameters = [p for p in inspect.signature(function).parameters if p != "self"]
    except (TypeError, ValueError):
        return
    if set(names) <= set(parameters) and list(names) != [p for p in parameters if p in names]:
        raise InputError(f"{origin}: the inputs {list(names)} are passed in that order but the function takes "
                         f"({', '.join(parameters)}); list them in the function's order")


def named_function(model: JaxModel) -> tuple[Callable[[dict[str, Any]], dict[str, Any]], list[str]]:
    """``f({name: array}) -> {name: array}`` around the model, and its output names (found by tracing)."""
    import jax

    names = [s.name for s in model.specs.specs]

    def outputs_of(result: Any) -> dict[str, Any]:
        if isinstance(result, Mapping) and all(not isinstance(v, (Mapping, list, tuple)) for v in result.values()):
            return {str(k): v for k, v in result.items()}
        leaves = jax.tree_util.tree_leaves(result)
        return {f"output_{i}": leaf for i, leaf in enumerate(leaves)}

    def function(inputs: dict[str, Any]) -> dict[str, Any]:
        return outputs_of(model.call(*(inputs[n] for n in names)))

    shapes = jax.eval_shape(function, abstract_inputs(model.specs.specs))
    return function, sorted(shapes)


def abstract_inputs(specs: Sequence[TensorSpec], *, dynamic_batch: bool = False) -> dict[str, Any]:
    """``jax.ShapeDtypeStruct`` per input; with `dynamic_batch`, one symbolic batch dimension ``b`` shared by all."""
    import jax
    from jax import export

    batch = export.symbolic_shape("b")[0] if dynamic_batch else None
    return {s.name: jax.ShapeDtypeStruct(tuple(batch if (batch is not None and i == 0) else d
                                               for i, d in enumerate(s.shape)), s.dtype)
            for s in specs}


def export_bytes(model: JaxModel, origin: str, *, dynamic_batch: bool = False) -> bytes:
    """The model exported with ``jax.export`` for CPU and CUDA, serialized; an InputError when it does not trace."""
    import jax
    from jax import export

    try:
        function, _ = named_function(model)
        exported = export.export(jax.jit(function), platforms=PLATFORMS)(
            abstract_inputs(model.specs.specs, dynamic_batch=dynamic_batch))
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a shape error from JAX or Flax: the model does not fit the inputs
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        shapes = ", ".join(f"{s.name}{list(s.shape)} {s.dtype}" for s in model.specs.specs)
        raise InputError(f"{origin}: the JAX model does not run on its inputs ({shapes}): {type(exc).__name__}: {first}; "
                         "make the inputs fit the parameters (--input-shape, or the inputs the factory returns)") from exc
    return bytes(exported.serialize())


def save_jax(obj: Any, out_dir: Path, specs: ExampleInputs | None, dynamic_batch: bool, origin: str) -> MaterializeResponse:
    """Save a JAX model as ``model.jaxexport``; its inputs are returned in the artifact's order (by name)."""
    model = as_jax_model(obj, specs, origin)
    data = export_bytes(model, origin, dynamic_batch=dynamic_batch)
    path = out_dir / ARTIFACT
    path.write_bytes(data)
    ordered = ExampleInputs(tuple(sorted(model.specs.specs, key=lambda s: s.name)), named=True, origin=model.specs.origin)
    return MaterializeResponse(path, Format.JAX, model.kind, ordered)


def same_model(model: JaxModel, function: Callable[[dict[str, Any]], dict[str, Any]], artifact: Path) -> bool:
    """Whether `model` (as `named_function` wraps it) computes what the saved `artifact` computes, on one seeded
    input (the hop's rebuild check).

    (The serializations differ between builds: they record the Python call stack as locations.)
    """
    import numpy as np

    from bridge.runtimes.jax_runner import load_exported

    exported = load_exported(artifact)
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in model.specs.specs:
        shape = tuple(int(d) for d in spec.shape if isinstance(d, int))
        values = rng.standard_normal(shape) if np.dtype(spec.dtype).kind == "f" else rng.integers(0, 2, shape)
        feeds[spec.name] = values.astype(spec.dtype)
    saved, built = exported.call(feeds), function(feeds)
    return sorted(saved) == sorted(built) and all(
        np.allclose(np.asarray(saved[n]), np.asarray(built[n]), rtol=1e-5, atol=1e-6, equal_nan=True) for n in saved)
