"""JAX runner: a ``jax.export`` serialization (``.jaxexport``) deserialized and run under ``jax.jit``.

The file holds StableHLO and the shapes of its arguments, no Python: loading it runs no code
from the file. Inputs and outputs are named from the exported function's argument and result
trees (a dict of arrays, as bridge saves them; ``input_0``/``output_0``... otherwise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from bridge.errors import DeviceUnavailableError, InputError
from bridge.runtimes.base import LoadOptions, Runner
from bridge.signature import Signature, TensorSpec


def load_exported(path: Path) -> Any:
    """The ``jax.export.Exported`` in `path`, or an InputError naming the file and the fix."""
    from jax import export

    data = path.read_bytes()
    try:
        return export.deserialize(bytearray(data))
    except Exception as exc:  # noqa: BLE001 - flatbuffer and version errors come as several types
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a jax.export serialization JAX can read ({reason}); "
                         "save it with jax.export.export(...).serialize(), or convert it again") from exc


def _names(tree: Any, count: int, prefix: str) -> list[str]:
    """Leaf names: the keys of a flat dict (alone, or the only positional argument), else ``prefix_i``."""
    import jax

    value = jax.tree_util.tree_unflatten(tree, list(range(count)))
    if prefix == "input" and isinstance(value, tuple) and len(value) == 2 and not value[1] and len(value[0]) == 1:
        value = value[0][0]
    if isinstance(value, dict) and all(isinstance(v, int) for v in value.values()):
        return [str(k) for k in sorted(value, key=lambda k: value[k])]
    return [f"{prefix}_{i}" for i in range(count)]


def _dims(aval: Any) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) else None for d in aval.shape)


class JaxRunner(Runner):
    runtime = "jax"
    kind = "jax_export"

    def __init__(self, path: Path, options: LoadOptions) -> None:
        super().__init__(path, options)
        import jax

        platform = "cuda" if options.device.startswith("cuda") else "cpu"
        try:
            self._device = jax.devices(platform)[0]
        except RuntimeError as exc:
            raise DeviceUnavailableError(f"{options.device}: not available (JAX has no {platform} backend here; "
                                         "for CUDA install jax[cuda12])") from exc
        self._jax = jax
        self.exported = load_exported(path)
        if platform not in self.exported.platforms:
            raise DeviceUnavailableError(f"{options.device}: not available (the export was lowered for "
                                         f"{', '.join(self.exported.platforms)} only)")
        self._inputs = _names(self.exported.in_tree, len(self.exported.in_avals), "input")
        self._outputs = _names(self.exported.out_tree, len(self.exported.out_avals), "output")
        self._signature = Signature(
            tuple(TensorSpec(n, _dims(a), str(a.dtype)) for n, a in zip(self._inputs, self.exported.in_avals, strict=True)),
            tuple(TensorSpec(n, _dims(a), str(a.dtype)) for n, a in zip(self._outputs, self.exported.out_avals, strict=True)),
        )
        self._call = jax.jit(self.exported.call)
        self._last: list[Any] = []

    @property
    def provider(self) -> str:
        kind = str(self._device.device_kind)
        return self._device.platform if kind == self._device.platform else f"{self._device.platform} ({kind})"

    def signature(self) -> Signature:
        return self._signature

    def run(self, feeds: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        import numpy as np

        jax = self._jax
        leaves = [jax.device_put(feeds[name], self._device) for name in self._inputs]
        args, kwargs = jax.tree_util.tree_unflatten(self.exported.in_tree, leaves)
        result = self._call(*args, **kwargs)
        self._last = jax.tree_util.tree_leaves(result)
        return {name: np.asarray(leaf) for name, leaf in zip(self._outputs, self._last, strict=True)}

    def synchronize(self) -> None:
        for leaf in self._last:
            leaf.block_until_ready()
