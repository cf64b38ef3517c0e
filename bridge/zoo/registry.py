"""The zoo's declarations: one `ZooModel` per reference model, nothing that runs a framework.

A model is named by its builder (``bridge.zoo.torch_models:build_mlp``), a string imported only when
the model is built, so listing the zoo (``bridge zoo list``) costs no torch and no TensorFlow.
Example inputs are generated here with numpy from a fixed seed, in the source's layout.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bridge.defaults import quantized_precision
from bridge.errors import InputError
from bridge.formats import Format
from bridge.signature import TensorSpec

SOURCES = ("torch", "keras", "jax")
"""The formats a zoo model can be written in (its builder returns an nn.Module, a Keras model, or a JAX model
in a form bridge.hops.jax_model takes)."""
QUANTIZE = ("int8", "dynamic", "fp16")
"""The schemes the matrix quantizes the zoo's image classifiers with (``ZooModel.quantize``)."""
TARGETS = (*(f.value for f in Format),
           *(f"{fmt}-{quantized_precision(s)}" for fmt in ("tflite", "onnx") for s in QUANTIZE), "tfjs (node-wasm)")
"""The formats a known failure can name, the quantized artifacts' keys (``tflite-int8``), and a target's second
runtime (``tfjs (node-wasm)``: the matrix's cell for TF.js's WebAssembly backend)."""
INPUTS_SEED = 0


@dataclass(frozen=True)
class InputSpec(TensorSpec):
    """One model input (a `TensorSpec` with an exact shape) and, for integers, a bound on its values."""

    dtype: str = "float32"
    high: int | None = None
    """Exclusive upper bound of generated integer values (a vocabulary size); None for floats."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.shape or any(not isinstance(d, int) or d <= 0 for d in self.shape):
            raise ValueError(f"input {self.name!r}: shape {self.shape} must be positive integers")
        is_int = np.issubdtype(np.dtype(self.dtype), np.integer)
        if is_int and (self.high is None or self.high <= 0):
            raise ValueError(f"input {self.name!r}: an integer input needs high > 0 (exclusive upper bound)")
        if not is_int and self.high is not None:
            raise ValueError(f"input {self.name!r}: high applies to integer inputs only, not {self.dtype}")

    @property
    def concrete_shape(self) -> tuple[int, ...]:
        """The shape, every dimension a fixed size (checked when the spec was made)."""
        return tuple(int(d) for d in self.shape if isinstance(d, int))


@dataclass(frozen=True)
class KnownFailure:
    """A conversion to `target` that is expected to fail, and why (a tracked limitation)."""

    target: str
    reason: str

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"known failure target {self.target!r}: use one of {', '.join(TARGETS)}")
        if not self.reason.strip():
            raise ValueError(f"known failure for {self.target}: give the reason")


@dataclass(frozen=True)
class ZooModel:
    """A reference model: how to build it, what it takes, and how it is expected to convert."""

    name: str
    description: str
    source: str
    builder: str
    """``package.module:function``; the function takes no arguments and returns an eval-mode model."""
    inputs: tuple[InputSpec, ...]
    atol: float | None = None
    rtol: float | None = None
    """None means bridge's defaults (bridge.defaults.TOLERANCES)."""
    known_failures: tuple[KnownFailure, ...] = ()
    dynamic_batch: bool = False
    """Exported with a dynamic batch dimension (dim 0 of every input)."""
    slow: bool = False
    """Big enough (torchvision, keras.applications) that tests mark its cases slow."""
    quantize: tuple[str, ...] = ()
    """The ``--quantize`` schemes the matrix also makes and verifies (the image classifiers: `QUANTIZE`)."""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"zoo model {self.name!r}: source {self.source!r} is not one of {', '.join(SOURCES)}")
        if "\n" in self.description or not self.description.strip():
            raise ValueError(f"zoo model {self.name!r}: the description must be one non-empty line")
        module, _, attr = self.builder.partition(":")
        if not module or not attr:
            raise ValueError(f"zoo model {self.name!r}: builder {self.builder!r} must read package.module:function")
        if not self.inputs:
            raise ValueError(f"zoo model {self.name!r}: declare at least one input")

    def load_builder(self) -> Callable[[], Any]:
        """Import the builder function (this imports the model's framework)."""
        builder: Callable[[], Any] = pkgutil.resolve_name(self.builder)
        return builder

    def build(self) -> Any:
        """Build the model: an eval-mode nn.Module or a Keras model with seeded weights."""
        return self.load_builder()()

    def example_inputs(self, seed: int = INPUTS_SEED) -> dict[str, NDArray[Any]]:
        """One input set, keyed by input name: floats standard normal, integers uniform in [0, high)."""
        rng = np.random.default_rng(seed)
        arrays: dict[str, NDArray[Any]] = {}
        for spec in self.inputs:
            if spec.high is not None:
                arrays[spec.name] = rng.integers(0, spec.high, size=spec.concrete_shape, dtype=np.dtype(spec.dtype))
            else:
                arrays[spec.name] = rng.standard_normal(spec.concrete_shape).astype(spec.dtype)
        return arrays

    def known_failure(self, target: str) -> KnownFailure | None:
        """The known failure for conversions to `target`, if one is declared."""
        return next((f for f in self.known_failures if f.target == target), None)


_NO_TFJS_FROM_JAX2TF = KnownFailure("tfjs", "jax2tf's SavedModel runs StableHLO in an XlaCallModule op, which the TF.js "
                                            "converter cannot read; TF.js is reached from TensorFlow only")


def _float_input(shape: tuple[int, ...], name: str = "x") -> tuple[InputSpec, ...]:
    return (InputSpec(name, shape),)


MODELS: tuple[ZooModel, ...] = (
    ZooModel(
        name="mlp",
        description="PyTorch MLP 10 -> 64 -> 1 (Linear, ReLU, Linear)",
        source="torch",
        builder="bridge.zoo.torch_models:build_mlp",
        inputs=_float_input((1, 10)),
    ),
    ZooModel(
        name="cnn",
        quantize=QUANTIZE,
        description="PyTorch image classifier: two conv+ReLU+maxpool blocks, dropout, Linear to 10 classes",
        source="torch",
        builder="bridge.zoo.torch_models:build_cnn",
        inputs=_float_input((1, 1, 28, 28)),
    ),
    ZooModel(
        name="keras_cnn",
        quantize=QUANTIZE,
        description="The cnn architecture as a Keras Sequential (NHWC input 'image')",
        source="keras",
        builder="bridge.zoo.keras_models:build_keras_cnn",
        inputs=_float_input((1, 28, 28, 1), name="image"),
    ),
    ZooModel(
        name="resnet_block",
        description="Conv stem and a ResNet basic block with calibrated BatchNorm, global pool, Linear 10",
        source="torch",
        builder="bridge.zoo.torch_models:build_resnet_block",
        inputs=_float_input((1, 3, 32, 32)),
    ),
    ZooModel(
        name="mobilenet_block",
        description="MobileNet-style depthwise-separable stack x3 (BN, ReLU6), global pool, Linear 10",
        source="torch",
        builder="bridge.zoo.torch_models:build_mobilenet_block",
        inputs=_float_input((1, 3, 32, 32)),
    ),
    ZooModel(
        name="transformer",
        description="Token embedding + TransformerEncoderLayer (GELU, padding mask from token 0), mean-pool, 4 classes",
        source="torch",
        builder="bridge.zoo.torch_models:build_transformer",
        inputs=(InputSpec("tokens", (1, 16), "int64", high=100),),
        known_failures=(KnownFailure("keras", "onnx2tf's tf_keras model drifts from the ONNX (max abs 0.037) on token "
                                              "ids above 1, while the SavedModel of the same onnx2tf run agrees (7e-8); "
                                              "convert's check feeds ids 0 and 1 only (defaults.CHECK_INT_HIGH), so "
                                              "verify is what finds it"),),
    ),
    ZooModel(
        name="lstm",
        description="LSTM(8 -> 16) sequence classifier, last step -> Linear 3",
        source="torch",
        builder="bridge.zoo.torch_models:build_lstm",
        inputs=_float_input((1, 12, 8)),
        known_failures=(
            KnownFailure("keras", "onnx2tf's tf_keras model cannot be saved: its CustomLSTMCell has no get_config() "
                                  "(NotImplementedError), so no .keras is written"),
            KnownFailure("tfjs (node-wasm)", "TF.js 4.22's WebAssembly backend refuses the LSTM's _FusedMatMul with a "
                                             "rank-3 bias ('only supports rank-1 bias'); the CPU backend runs it"),
        ),
        # onnx2tf's flatbuffer_direct LSTM lowering drifts ~3.5e-4 from the ONNX; convert's check passes it
        # over for the tf_converter candidate (docs/limitations.md).
    ),
    ZooModel(
        name="gru",
        description="GRU(8 -> 16) sequence classifier, last step -> Linear 3",
        source="torch",
        builder="bridge.zoo.torch_models:build_gru",
        inputs=_float_input((1, 12, 8)),
        # torch.onnx's dynamo export of nn.GRU drifts ~0.089 from PyTorch; convert's check passes it over for
        # the dynamo-decomposed candidate (docs/limitations.md).
    ),
    ZooModel(
        name="conv1d",
        description="Two Conv1d layers on [N, C, T]; returns the rank-3 feature map [1, 8, 32]",
        source="torch",
        builder="bridge.zoo.torch_models:build_conv1d",
        inputs=_float_input((1, 4, 32)),
    ),
    ZooModel(
        name="two_io",
        description="Two inputs (image, features) and two outputs of rank 2 (logits) and rank 4 (feature map)",
        source="torch",
        builder="bridge.zoo.torch_models:build_two_io",
        inputs=(InputSpec("image", (1, 3, 16, 16)), InputSpec("features", (1, 5))),
    ),
    ZooModel(
        name="embedding",
        description="nn.Embedding(50, 16) on int64 ids, mean over tokens, Linear 2",
        source="torch",
        builder="bridge.zoo.torch_models:build_embedding",
        inputs=(InputSpec("ids", (1, 10), "int64", high=50),),
    ),
    ZooModel(
        name="dynamic_batch",
        description="Small CNN exported with a dynamic batch dimension (example batch 2)",
        source="torch",
        builder="bridge.zoo.torch_models:build_dynamic_batch",
        # Batch 2, not 1: torch.export specialises size-1 dimensions, which would pin the batch.
        inputs=_float_input((2, 3, 16, 16)),
        dynamic_batch=True,
    ),
    ZooModel(
        name="resnet18",
        quantize=QUANTIZE,
        known_failures=(KnownFailure("tflite-int8", "LiteRT 2.1.2's XNNPACK delegate refuses node 39 of the int8 model "
                                                    "('failed to prepare'); the runner now falls back to the builtin "
                                                    "kernels, not yet measured in a matrix run"),),
        description="torchvision resnet18 (random weights, BN calibrated), 1000 classes",
        source="torch",
        builder="bridge.zoo.torch_models:build_resnet18",
        inputs=_float_input((1, 3, 224, 224)),
        slow=True,
    ),
    ZooModel(
        name="mobilenet_v3_small",
        quantize=QUANTIZE,
        description="torchvision mobilenet_v3_small (random weights, BN calibrated), 1000 classes",
        source="torch",
        builder="bridge.zoo.torch_models:build_mobilenet_v3_small",
        inputs=_float_input((1, 3, 224, 224)),
        slow=True,
        known_failures=(KnownFailure("onnx-dynamic", "onnxruntime's quantize_dynamic (int8 weights, per-tensor) gives "
                                                     "SQNR 18-19 dB on this untrained network, under the 20 dB floor "
                                                     "(top-1 still 1.0 on the matrix's samples)"),),
    ),
    ZooModel(
        name="keras_mobilenet_v2",
        quantize=QUANTIZE,
        description="keras.applications.MobileNetV2 at 96x96, 10 classes (random weights, BN calibrated)",
        source="keras",
        builder="bridge.zoo.keras_models:build_keras_mobilenet_v2",
        inputs=_float_input((1, 96, 96, 3), name="image"),
        slow=True,
        known_failures=tuple(KnownFailure(key, f"under the quantized tolerance: the untrained MobileNetV2's 10 logits lie "
                                               f"close together and int8 noise reorders them (measured {figures}, "
                                               "calibrated on generated inputs); a trained model and a representative "
                                               "--calibration set are what int8 needs")
                             for key, figures in (("tflite-int8", "SQNR 11.2 dB, top-1 0.75"),
                                                  ("tflite-dynamic", "SQNR 15.3 dB"),
                                                  ("onnx-int8", "SQNR 10.2 dB, top-1 0.5"),
                                                  ("onnx-dynamic", "SQNR 12.0 dB, top-1 0.5"))),
    ),
    ZooModel(
        name="hf_bert",
        description="Hugging Face BertForSequenceClassification, 2 layers, hidden 32 (input_ids, attention_mask, token_type_ids -> logits)",
        source="torch",
        builder="bridge.zoo.hf_models:build_bert",
        inputs=(InputSpec("input_ids", (1, 16), "int64", high=100), InputSpec("attention_mask", (1, 16), "int64", high=2),
                InputSpec("token_type_ids", (1, 16), "int64", high=2)),
        known_failures=(KnownFailure("keras", "onnx2tf's tf_keras model drifts from the ONNX (logits max abs 2.2) while its "
                                              "SavedModel agrees; convert keeps it as the closest, unverified"),
                        KnownFailure("tfjs", "TF.js 4.22 computes the logits off by max abs 0.61 on its CPU backend while "
                                             "the SavedModel it is made from agrees; tf -> tfjs keeps it as the closest, "
                                             "unverified (not localised yet)"),
                        KnownFailure("tfjs (node-wasm)", "the same on the WebAssembly backend: max abs 2.39")),
    ),
    ZooModel(
        name="hf_gpt2",
        description="Hugging Face GPT2LMHeadModel, 2 layers, embedding 32 (input_ids, attention_mask -> logits), no KV cache",
        source="torch",
        builder="bridge.zoo.hf_models:build_gpt2",
        inputs=(InputSpec("input_ids", (1, 16), "int64", high=100), InputSpec("attention_mask", (1, 16), "int64", high=2)),
        known_failures=(KnownFailure("keras", "onnx2tf's tf_keras model drifts from the ONNX (logits max abs 6.3) while its "
                                              "SavedModel agrees; convert keeps it as the closest, unverified"),
                        KnownFailure("tfjs", "TF.js 4.22 computes the logits off by max abs 4.65 on its CPU backend while "
                                             "the SavedModel it is made from agrees; tf -> tfjs keeps it as the closest, "
                                             "unverified (not localised yet)"),
                        KnownFailure("tfjs (node-wasm)", "the same on the WebAssembly backend: max abs 7.63")),
    ),
    ZooModel(
        name="hf_vit",
        description="Hugging Face ViTForImageClassification, 32x32 images, patch 8, 2 layers (pixel_values -> logits)",
        source="torch",
        builder="bridge.zoo.hf_models:build_vit",
        inputs=_float_input((1, 3, 32, 32), "pixel_values"),
    ),
    # JAX models are converted from their builder (a package.module:factory): jax2onnx needs the function.
    ZooModel(
        name="flax_cnn",
        description="Flax NNX CNN on NHWC images: Conv, BatchNorm (measured statistics), strided Conv, mean pool, Linear 5",
        source="jax",
        builder="bridge.zoo.jax_models:build_flax_cnn",
        inputs=_float_input((1, 16, 16, 3), "image"),
        known_failures=(KnownFailure("torch", "jax2onnx writes Conv with auto_pad SAME_UPPER, which onnx2torch does not "
                                              "implement"),
                        KnownFailure("torchserve", "made from the torch artifact, which onnx2torch cannot make (auto_pad "
                                                   "SAME_UPPER)"),
                        _NO_TFJS_FROM_JAX2TF),
    ),
    ZooModel(
        name="flax_mlp",
        description="Flax Linen MLP: Dense 12 -> 32, LayerNorm, tanh, Dense 3 (module, variables, inputs)",
        source="jax",
        builder="bridge.zoo.jax_models:build_flax_mlp",
        inputs=_float_input((1, 12)),
        known_failures=(_NO_TFJS_FROM_JAX2TF,),
    ),
    ZooModel(
        name="jnp_function",
        description="A jax.numpy function of x [2, 8] and y [2, 6] returning probabilities and projection (softmax, sigmoid gate)",
        source="jax",
        builder="bridge.zoo.jax_models:build_jnp_function",
        inputs=(InputSpec("x", (2, 8)), InputSpec("y", (2, 6))),
        known_failures=(_NO_TFJS_FROM_JAX2TF,),
    ),
)

_BY_NAME = {model.name: model for model in MODELS}


def names() -> tuple[str, ...]:
    """The zoo's model names, in declaration order."""
    return tuple(model.name for model in MODELS)


def get(name: str) -> ZooModel:
    """The zoo model called `name`, or an InputError listing the names there are."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise InputError(f"no zoo model {name!r}; the zoo has {', '.join(names())}") from None
