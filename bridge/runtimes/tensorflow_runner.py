"""TensorFlow runners: a SavedModel's ``serving_default`` signature, and Keras 3 ``.keras`` models."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from numpy.typing import NDArray

from bridge import safety
from bridge.errors import DeviceUnavailableError, InputError, UnsafeInputError
from bridge.runtimes.base import LoadOptions, Runner
from bridge.signature import Signature, TensorSpec

if TYPE_CHECKING:
    pass

SERVING_KEY = "serving_default"


def _device_scope(tf: Any, device: str) -> str:
    if device.startswith("cuda"):
        if not tf.config.list_physical_devices("GPU"):
            raise DeviceUnavailableError("cuda: not available (TensorFlow sees no GPU)")
        return "/GPU:0"
    return "/CPU:0"


def _dtype(dtype: Any) -> str:
    """``float32`` from Keras 3 (a string) and tf_keras (a tf.DType) alike."""
    return str(getattr(dtype, "name", dtype))


def _shape(shape: Any) -> tuple[int | str | None, ...]:
    return tuple(int(d) if d is not None else None for d in shape)


def load_saved_model(path: Path) -> Any:
    """Load a SavedModel and return its serving_default function, or an InputError saying why not."""
    import tensorflow as tf

    if not (path / "saved_model.pb").is_file():
        raise InputError(f"{path}: not a SavedModel directory (no saved_model.pb); point at the directory tf.saved_model.save wrote")
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # noqa: BLE001 - TF raises many types for damaged SavedModels
        raise InputError(f"{path}: TensorFlow cannot load this SavedModel ({type(exc).__name__}: {str(exc).strip()[:200]})") from exc
    if SERVING_KEY not in loaded.signatures:
        keys = ", ".join(loaded.signatures) or "none"
        raise InputError(f"{path}: the SavedModel has no {SERVING_KEY!r} signature (it has: {keys}); export it with one")
    return loaded, loaded.signatures[SERVING_KEY]


class _TensorflowRunner(Runner):
    """What the SavedModel and Keras runners share: TensorFlow's devices and a fixed signature."""

    _inputs: tuple[TensorSpec, ...]
    _outputs: tuple[TensorSpec, ...]

    _scope: str

    @property
    def provider(self) -> str:
        return self._scope

    def signature(self) -> Signature:
        return Signature(self._inputs, self._outputs)


class SavedModelRunner(_TensorflowRunner):
    runtime = "tensorflow"

    def __init__(self, path: Path, options: LoadOptions) -> None:
        super().__init__(path, options)
        import tensorflow as tf

        self._tf = tf
        self._scope = _device_scope(tf, options.device)
        with tf.device(self._scope):
            self._loaded, self._fn = load_saved_model(path)
        _, kwargs = self._fn.structured_input_signature
        self._inputs = tuple(
            TensorSpec(name, _shape(spec.shape), spec.dtype.name) for name, spec in kwargs.items()
        )
        outputs = self._fn.structured_outputs
        self._outputs = tuple(
            TensorSpec(name, _shape(spec.shape), spec.dtype.name) for name, spec in outputs.items()
        )

    def run(self, feeds: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        tf = self._tf
        with tf.device(self._scope):
            result = self._fn(**{name: tf.constant(value) for name, value in feeds.items()})
        return {name: value.numpy() for name, value in result.items()}


def saved_by_tf_keras(path: Path) -> bool:
    """Whether a ``.keras`` archive was written by tf_keras (Keras 2, as onnx2tf writes), not Keras 3."""
    import json
    import zipfile

    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    return isinstance(config, dict) and str(config.get("module", "")).startswith("tf_keras")


def load_keras(path: Path, *, trust_code: bool) -> Any:
    """Load a Keras model with safe_mode on, after refusing archives with Lambda layers.

    A ``.keras`` archive written by tf_keras (onnx -> keras, onnx2tf's model) is loaded by tf_keras,
    also with safe_mode on.
    """
    import keras

    loader = keras.saving.load_model
    if path.suffix.lower() == ".keras":
        safety.check_keras_archive(path, trust_code=trust_code)
        if saved_by_tf_keras(path):
            import tf_keras

            loader = tf_keras.models.load_model
    elif path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty; save the model again")
    try:
        return loader(str(path), safe_mode=not trust_code, compile=False)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "Lambda" in str(exc):
            raise UnsafeInputError(
                f"{path}: the model carries Python code (a Lambda layer); pass --trust-code if you trust the file"
            ) from exc
        reason = str(exc).strip().splitlines()[0][:200]
        raise InputError(f"{path}: Keras cannot load it ({reason}); save it again with model.save('x.keras')") from exc
    except Exception as exc:  # noqa: BLE001 - h5py, zipfile and keras raise many types for damaged files
        reason = " ".join(str(exc).split())[:200]
        raise InputError(f"{path}: not a loadable Keras model ({type(exc).__name__}: {reason}); "
                         "the file is damaged or not a Keras model: save it again with model.save('x.keras')") from exc


class KerasRunner(_TensorflowRunner):
    runtime = "keras"

    def __init__(self, path: Path, options: LoadOptions) -> None:
        super().__init__(path, options)
        if path.suffix.lower() == ".keras":
            # Refuse a damaged archive or a Lambda layer before paying for the TensorFlow import.
            safety.check_keras_archive(path, trust_code=options.trust_code)
        import tensorflow as tf

        self._tf = tf
        self._scope = _device_scope(tf, options.device)
        with tf.device(self._scope):
            self.model = load_keras(path, trust_code=options.trust_code)
        self._inputs = tuple(
            TensorSpec(t.name, _shape(t.shape), _dtype(t.dtype)) for t in self.model.inputs
        )
        self._outputs = tuple(
            TensorSpec(f"output_{i}", _shape(t.shape), _dtype(t.dtype)) for i, t in enumerate(self.model.outputs)
        )
        # Called as a graph, as predict() calls it: eagerly, a converted model of many small layers
        # spends seconds per call in Python (mobilenet_v3_small: 2.3 s against 9 ms).
        self._call = tf.function(lambda inputs: self.model(inputs, training=False))

    def run(self, feeds: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        args = [feeds[spec.name] for spec in self._inputs]
        with self._tf.device(self._scope):
            result = self._call(args if len(args) > 1 else args[0])
        values = result if isinstance(result, (list, tuple)) else [result]
        return {f"output_{i}": _numpy(v) for i, v in enumerate(values)}


def _numpy(value: Any) -> Any:
    return value.numpy() if hasattr(value, "numpy") else value
