"""TF.js runners: a graph model (``model.json`` + weight shards) run in Node.js, on TF.js's CPU or WebAssembly backend.

The JavaScript side is ``bridge/runtimes/tfjs/run.js``, with the npm packages pinned by the
``package-lock.json`` beside it (installed by the README setup: ``npm ci`` in that folder). It
is started once per runner and answers over its stdin and stdout: feeds and outputs cross as raw
typed arrays with their shapes, and latency is measured inside JavaScript (``process.hrtime``
around ``execute`` and reading the values), so it excludes the process boundary.

Before node starts, the folder is checked here: ``model.json`` must be a graph model whose weight
files are plain names inside the folder, present, and as large as their weights say.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from bridge.errors import DeviceUnavailableError, InputError, RuntimeLoadError
from bridge.runtimes.base import LoadOptions, Runner
from bridge.signature import Signature, TensorSpec

JS_DIR = Path(__file__).with_name("tfjs")
SCRIPT = JS_DIR / "run.js"
PACKAGES = ("tfjs-core", "tfjs-converter", "tfjs-backend-cpu", "tfjs-backend-wasm")
_DTYPES = {"DT_FLOAT": "float32", "DT_INT32": "int32", "DT_INT64": "int32", "DT_BOOL": "bool", "DT_HALF": "float32"}
"""TF.js computes in float32, int32 and bool: int64 crosses as int32, as the converter stores it."""
_BYTES = {"float32": 4, "float16": 2, "int32": 4, "int64": 4, "uint8": 1, "int8": 1, "int16": 2, "uint16": 2, "bool": 1}


def missing() -> tuple[str, ...]:
    """What the Node.js runners need and do not find: ``node``, and the npm packages (``npm ci``)."""
    found = [] if shutil.which("node") else ["node (Node.js 18 or newer on PATH)"]
    if not all((JS_DIR / "node_modules" / "@tensorflow" / name).is_dir() for name in PACKAGES):
        found.append(f"the TF.js npm packages (npm ci --prefix {JS_DIR})")
    return tuple(found)


def read_graph_model(directory: Path) -> dict[str, Any]:
    """``model.json`` of a TF.js graph model, checked: an InputError naming the file and the fix otherwise."""
    model_json = directory / "model.json"
    try:
        document = json.loads(model_json.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{directory}: no model.json inside; point at the folder the TF.js converter wrote") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{model_json}: not valid JSON ({exc}); convert the model again") from None
    if not isinstance(document, dict) or document.get("format") != "graph-model" or "modelTopology" not in document:
        found = document.get("format") if isinstance(document, dict) else None
        raise InputError(f"{model_json}: not a TF.js graph model (format {found!r}); convert a SavedModel with bridge convert --to tfjs")
    manifest = document.get("weightsManifest", [])
    root = directory.resolve()
    for group in manifest:
        expected = sum(_weight_bytes(w) for w in group.get("weights", []))
        actual = 0
        for name in group.get("paths", []):
            path = (directory / name)
            if not isinstance(name, str) or Path(name).is_absolute() or ".." in Path(name).parts or \
                    not path.resolve().is_relative_to(root):
                raise InputError(f"{model_json}: weight file {name!r} lies outside the model's folder; refusing to read it")
            if not path.is_file():
                raise InputError(f"{model_json}: weight file {name!r} is missing; copy every shard model.json lists, "
                                 "or convert the model again")
            actual += path.stat().st_size
        if actual != expected:
            raise InputError(f"{model_json}: the weight files hold {actual} bytes but the weights need {expected}; "
                             "a shard is damaged or from another model: convert it again")
    return document


def _weight_bytes(weight: dict[str, Any]) -> int:
    count = 1
    for d in weight.get("shape", []):
        count *= int(d)
    quantization = weight.get("quantization")
    dtype = quantization.get("dtype") if isinstance(quantization, dict) else weight.get("dtype", "float32")
    return count * _BYTES.get(str(dtype), 4)


def _spec(name: str, entry: dict[str, Any]) -> TensorSpec:
    dims = entry.get("tensorShape", {}).get("dim", [])
    shape = tuple(None if int(d.get("size", -1)) < 0 else int(d["size"]) for d in dims)
    return TensorSpec(name, shape, _DTYPES.get(str(entry.get("dtype")), "float32"))


def graph_signature(document: dict[str, Any], where: Path) -> tuple[Signature, dict[str, str]]:
    """The signature the converter recorded (the SavedModel's names), and each name's graph node."""
    signature = document.get("signature") or {}
    inputs, outputs = signature.get("inputs") or {}, signature.get("outputs") or {}
    if not inputs or not outputs:
        raise InputError(f"{where}: model.json has no signature; convert it from a SavedModel's serving_default")
    nodes = {name: str(entry["name"]).split(":")[0] for name, entry in (*inputs.items(), *outputs.items())}
    return Signature(tuple(_spec(n, e) for n, e in inputs.items()), tuple(_spec(n, e) for n, e in outputs.items())), nodes


class NodeRunner(Runner):
    """A graph model in a Node.js process on one TF.js backend (the subclass says which)."""

    backend = ""

    def __init__(self, path: Path, options: LoadOptions) -> None:
        super().__init__(path, options)
        if options.device != "cpu":
            raise DeviceUnavailableError(f"{options.device}: not available (TF.js in Node.js runs on the CPU here)")
        self._signature, self._nodes = graph_signature(read_graph_model(path), path / "model.json")
        lacking = missing()
        if lacking:
            raise RuntimeLoadError(f"the {self.runtime} runner needs {' and '.join(lacking)}")
        self._process = subprocess.Popen(["node", str(SCRIPT), str(path), self.backend], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=JS_DIR)
        header, _ = self._receive()
        if "error" in header:
            self.close()
            raise InputError(f"{path}: TF.js cannot load it ({header['error'][:200]}); convert the model again")

    def signature(self) -> Signature:
        return self._signature

    def _request(self, op: str, feeds: dict[str, NDArray[Any]], **extra: Any) -> tuple[dict[str, Any], list[bytes]]:
        import numpy as np

        arrays = []
        described = []
        for spec in self._signature.inputs:
            array = np.ascontiguousarray(feeds[spec.name], dtype=np.dtype("uint8" if spec.dtype == "bool" else spec.dtype))
            arrays.append(array.tobytes())
            described.append({"name": self._nodes[spec.name], "dtype": spec.dtype, "shape": list(array.shape),
                              "bytes": len(arrays[-1])})
        outputs = [self._nodes[s.name] for s in self._signature.outputs]
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"op": op, "feeds": described, "outputs": outputs, **extra}).encode() + b"\n")
        for data in arrays:
            self._process.stdin.write(data)
        self._process.stdin.flush()
        header, buffers = self._receive()
        if "error" in header:
            raise RuntimeError(f"TF.js ({self.backend}): {header['error'][:300]}")
        return header, buffers

    def _receive(self) -> tuple[dict[str, Any], list[bytes]]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"node ({self.backend}) ended (exit {self._process.poll()})")
        header: dict[str, Any] = json.loads(line)
        buffers = [self._process.stdout.read(item["bytes"]) for item in header.get("outputs", [])]
        return header, buffers

    def run(self, feeds: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        import numpy as np

        header, buffers = self._request("run", feeds)
        result = {}
        for spec, item, data in zip(self._signature.outputs, header["outputs"], buffers, strict=True):
            dtype = np.dtype("bool" if item["dtype"] == "bool" else item["dtype"])
            result[spec.name] = np.frombuffer(data, dtype=dtype).reshape(item["shape"])
        return result

    def timed(self, feeds: dict[str, NDArray[Any]], *, warmup: int, runs: int) -> list[int]:
        """Nanoseconds per call, measured in JavaScript around execute and reading the values."""
        header, _ = self._request("time", feeds, warmup=warmup, runs=runs)
        return [int(ns) for ns in header["ns"]]

    def close(self) -> None:
        process = getattr(self, "_process", None)
        if process is None or process.poll() is not None:
            return
        assert process.stdin is not None
        try:
            process.stdin.close()
            process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()


class NodeCpuRunner(NodeRunner):
    runtime = "node-cpu"
    kind = "graph_model"
    backend = "cpu"


class NodeWasmRunner(NodeRunner):
    runtime = "node-wasm"
    kind = "graph_model"
    backend = "wasm"
