"""An independent latency loop for one artifact, written without bridge (run as its own process).

    python bench/_timing_child.py FORMAT PATH INPUTS.npz SPECS.json WARMUP RUNS

FORMAT is torch, onnx, tf, keras or tflite. INPUTS.npz holds the source inputs ``[samples, *shape]``
keyed by source input name; SPECS.json is the artifact's input specs from the manifest
(name, source_name, dtype, perm). Sample 0 is fed, transposed by the perm, and the plain
runtime call is timed with time.perf_counter over RUNS calls after WARMUP calls.
Prints one line: ``P50_MS <median milliseconds>``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

import numpy as np


def feeds_for(inputs_path: str, specs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    with np.load(inputs_path) as data:
        source = {name: data[name][0] for name in data.files}
    feeds = {}
    for spec in specs:
        array = source[spec.get("source_name") or spec["name"]]
        perm = spec.get("perm") or list(range(array.ndim))
        dtype = np.float32 if spec["dtype"] == "bfloat16" else np.dtype(spec["dtype"])
        feeds[spec["name"]] = np.ascontiguousarray(array.transpose(perm).astype(dtype))
    return feeds


def make_call(fmt: str, path: str, feeds: dict[str, np.ndarray], specs: list[dict[str, Any]]) -> Any:
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return lambda: session.run(None, feeds)
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=path)
        key = "serving_default" if "serving_default" in interpreter.get_signature_list() else next(iter(interpreter.get_signature_list()))
        runner = interpreter.get_signature_runner(key)
        return lambda: runner(**feeds)
    if fmt == "tf":
        import tensorflow as tf

        fn = tf.saved_model.load(path).signatures["serving_default"]
        return lambda: {k: v.numpy() for k, v in fn(**{n: tf.constant(a) for n, a in feeds.items()}).items()}
    if fmt == "keras":
        import keras

        model = keras.saving.load_model(path, compile=False)
        args = [feeds[s["name"]] for s in specs]
        return lambda: model(args if len(args) > 1 else args[0], training=False)
    if fmt == "torch":
        import torch

        if path.endswith(".pt2"):
            module = torch.export.load(path).module()
        else:
            module = torch.jit.load(path)
        args = [torch.from_numpy(feeds[s["name"]]) for s in specs]

        def call() -> Any:
            with torch.no_grad():
                out = module(*args)
            return [t.numpy() for t in (out if isinstance(out, (list, tuple)) else [out])]

        return call
    raise SystemExit(f"unknown format {fmt}")


def main(fmt: str, path: str, inputs_path: str, specs_path: str, warmup: str, runs: str) -> None:
    specs = json.loads(open(specs_path, encoding="utf-8").read())
    call = make_call(fmt, path, feeds_for(inputs_path, specs), specs)
    for _ in range(int(warmup)):
        call()
    samples = []
    for _ in range(int(runs)):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    print(f"P50_MS {statistics.median(samples) * 1e3:.6f}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:7])
