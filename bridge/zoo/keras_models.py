"""Keras builders of the zoo. Each takes no arguments and returns a Keras 3 model.

Weights come from ``keras.utils.set_random_seed(0)``. Models with BatchNormalization are
calibrated by train-mode calls (``model(x, training=True)``), which update the moving statistics
in Keras 3; see `calibrate` for why the momentum is changed while doing so.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

SEED = 0
CALIBRATION_STEPS = 4


def calibrate(model: Any, shape: tuple[int, ...], steps: int = CALIBRATION_STEPS) -> Any:
    """Fill BatchNormalization moving statistics from `steps` train-mode calls on seeded data.

    MobileNetV2 uses momentum 0.999, so a few calls would leave the statistics almost at their
    defaults (mean 0, variance 1). Step k uses momentum (k-1)/k, which makes the moving values
    the plain average of the steps' batch statistics; the original momentum is restored after.
    """
    norms = [layer for layer in _layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    rng = np.random.default_rng(SEED)
    for step in range(1, steps + 1):
        for layer in norms:
            layer.momentum = (step - 1) / step
        model(rng.standard_normal(shape).astype("float32"), training=True)
    for layer, momentum in zip(norms, momenta, strict=False):
        layer.momentum = momentum
    return model


def _layers(model: Any) -> list[Any]:
    found = []
    for layer in model.layers:
        found.append(layer)
        if hasattr(layer, "layers"):
            found.extend(_layers(layer))
    return found


def build_keras_cnn() -> Any:
    """The ``keras_cnn`` zoo model: the ``cnn`` architecture in NHWC, input ``image`` [N, 28, 28, 1]."""
    keras.utils.set_random_seed(SEED)
    return keras.Sequential(
        [
            keras.Input((28, 28, 1), name="image"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.25),
            keras.layers.Dense(10),
        ],
        name="keras_cnn",
    )


def build_keras_mobilenet_v2() -> Any:
    """The ``keras_mobilenet_v2`` zoo model: MobileNetV2 at 96x96, 10 classes, BatchNorm calibrated."""
    keras.utils.set_random_seed(SEED)
    model = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), input_tensor=keras.Input((96, 96, 3), name="image"), weights=None, classes=10,
    )
    return calibrate(model, (4, 96, 96, 3))
