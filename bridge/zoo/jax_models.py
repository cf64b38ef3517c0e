"""Small JAX models for the zoo: a Flax NNX CNN, a Flax Linen MLP and a plain ``jax.numpy`` function.

Each builder is a factory in the form bridge's JAX sources take (bridge.hops.jax_model): it returns
the model with its example inputs, weights from a fixed seed. The CNN's BatchNorm carries real
statistics, measured on a batch, so that normalisation changes the numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

IMAGE = (1, 16, 16, 3)


def _nnx_cnn_class() -> Any:
    from flax import nnx

    class SmallCNN(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.conv1 = nnx.Conv(3, 8, kernel_size=(3, 3), rngs=rngs)
            self.bn = nnx.BatchNorm(8, rngs=rngs)
            self.conv2 = nnx.Conv(8, 16, kernel_size=(3, 3), strides=(2, 2), rngs=rngs)
            self.head = nnx.Linear(16, 5, rngs=rngs)

        def __call__(self, image: Any) -> Any:
            x = nnx.relu(self.bn(self.conv1(image)))
            x = nnx.gelu(self.conv2(x))
            return self.head(x.mean(axis=(1, 2)))

    return SmallCNN


def build_flax_cnn() -> tuple[Any, dict[str, Any]]:
    """Flax NNX: Conv 3->8, BatchNorm (measured statistics), Conv 8->16 stride 2, mean pool, Linear 5."""
    import jax.numpy as jnp
    from flax import nnx

    model = _nnx_cnn_class()(nnx.Rngs(0))
    batch = np.random.default_rng(1).standard_normal((8, *IMAGE[1:])).astype(np.float32)
    features = model.conv1(jnp.asarray(batch))
    model.bn.mean.value = features.mean(axis=(0, 1, 2))
    model.bn.var.value = features.var(axis=(0, 1, 2))
    model.bn.scale.value = jnp.asarray(np.random.default_rng(2).uniform(0.5, 1.5, 8).astype(np.float32))
    model.bn.bias.value = jnp.asarray(np.random.default_rng(3).uniform(-0.2, 0.2, 8).astype(np.float32))
    model.eval()
    return model, {"image": np.zeros(IMAGE, np.float32)}


def build_flax_mlp() -> tuple[Any, Any, dict[str, Any]]:
    """Flax Linen: Dense 12->32, LayerNorm, tanh, Dense 3; (module, variables, inputs)."""
    import jax
    from flax import linen

    class MLP(linen.Module):
        @linen.compact
        def __call__(self, x: Any) -> Any:
            x = jax.numpy.tanh(linen.LayerNorm()(linen.Dense(32)(x)))
            return linen.Dense(3)(x)

    module = MLP()
    inputs = {"x": np.zeros((1, 12), np.float32)}
    variables = module.init(jax.random.key(0), inputs["x"])
    return module, variables, inputs


def build_jnp_function() -> tuple[Any, dict[str, Any]]:
    """A jax.numpy function of two inputs with two named outputs: a gated projection and a softmax."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.standard_normal((8, 6)).astype(np.float32))
    v = jnp.asarray(rng.standard_normal((6,)).astype(np.float32))

    def gated(x: Any, y: Any) -> dict[str, Any]:
        h = x @ w
        gate = jax.nn.sigmoid(y)
        return {"projection": jnp.tanh(h) * gate + v, "probabilities": jax.nn.softmax(h * y, axis=-1)}

    return gated, {"x": np.zeros((2, 8), np.float32), "y": np.zeros((2, 6), np.float32)}
