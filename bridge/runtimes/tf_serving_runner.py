"""TF Serving runners: the model directory as TF Serving loads it, and tensorflow_model_server over REST.

``serving-signature`` does what the server does at load, in-process: picks the highest numbered
version, loads it with the ``serve`` tag, takes ``serving_default``, and replays the warm-up
records (``assets.extra/tf_serving_warmup_requests``: a record that does not decode or does not
run fails the load, as it fails the server's). A verify sample equal to a warm-up record is fed
from the record's decoded ``TensorProto`` rather than from bridge's own array, so the check covers
what the server would be sent.

``tf-serving-rest`` starts ``tensorflow_model_server`` on ephemeral ports and sends each sample to
``/v1/models/NAME:predict``. The binary is not pip-installable (`missing_server` says so when it
is not on PATH). TF Serving binds its ports on every interface (tensorflow/serving#1969); the
check connects on 127.0.0.1.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from bridge.errors import InputError
from bridge.runtimes.base import LoadOptions, Runner
from bridge.runtimes.server import ServerRunner
from bridge.runtimes.serving_layout import MAX_WARMUP_RECORDS, WARMUP, version_dir
from bridge.runtimes.tensorflow_runner import SERVING_KEY, _device_scope, _shape
from bridge.signature import Signature, TensorSpec

SERVER = "tensorflow_model_server"


def missing_server() -> tuple[str, ...]:
    return () if shutil.which(SERVER) else (f"{SERVER} on PATH",)


def read_warmup(version: Path) -> list[dict[str, NDArray[Any]]]:
    """The warm-up records' inputs, decoded as TF Serving decodes them; an InputError for a damaged file."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = version / WARMUP
    if not path.is_file():
        return []
    records: list[dict[str, NDArray[Any]]] = []
    try:
        for raw in tf.data.TFRecordDataset(str(path)).take(MAX_WARMUP_RECORDS + 1):
            log = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
            if log.WhichOneof("log_type") != "predict_log":
                raise InputError(f"{path}: record {len(records)} is not a PredictLog; bridge and TF Serving's REST "
                                 "check replay predict requests only: convert again")
            records.append({name: tf.make_ndarray(proto) for name, proto in log.predict_log.request.inputs.items()})
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, ValueError) as exc:
        raise InputError(f"{path}: damaged warm-up records ({str(exc).splitlines()[0][:160]}); "
                         "TF Serving would refuse to load this version: convert again") from exc
    if len(records) > MAX_WARMUP_RECORDS:
        raise InputError(f"{path}: more than {MAX_WARMUP_RECORDS} warm-up records, the most TF Serving reads; write fewer")
    return records


class ServingSignatureRunner(Runner):
    runtime = "serving-signature"
    kind = "tf_serving"

    def __init__(self, path: Path, options: LoadOptions) -> None:
        super().__init__(path, options)
        import tensorflow as tf

        self._tf = tf
        self.version = version_dir(path)
        self._scope = _device_scope(tf, options.device)
        with tf.device(self._scope):
            try:
                self._loaded = tf.saved_model.load(str(self.version), tags=["serve"])
            except Exception as exc:  # noqa: BLE001 - TF raises many types for damaged SavedModels
                raise InputError(f"{self.version}: TF Serving could not load it with the serve tag "
                                 f"({type(exc).__name__}: {str(exc).strip()[:200]}); convert again") from exc
        if SERVING_KEY not in self._loaded.signatures:
            raise InputError(f"{self.version}: no {SERVING_KEY!r} signature, which TF Serving's REST API calls by default; "
                             "export the SavedModel with one")
        self._fn = self._loaded.signatures[SERVING_KEY]
        _, kwargs = self._fn.structured_input_signature
        self._inputs = tuple(TensorSpec(name, _shape(spec.shape), spec.dtype.name) for name, spec in kwargs.items())
        self._outputs = tuple(TensorSpec(name, _shape(spec.shape), spec.dtype.name)
                              for name, spec in self._fn.structured_outputs.items())
        self._records = read_warmup(self.version)
        names = {s.name for s in self._inputs}
        for i, record in enumerate(self._records):
            if set(record) != names:
                raise InputError(f"{self.version / WARMUP}: record {i} feeds {sorted(record)}, the signature takes "
                                 f"{sorted(names)}; TF Serving would refuse to load this version: convert again")
            self._call(record)  # as the server replays them at load
        self._matched: set[int] = set()

    @property
    def provider(self) -> str:
        return self._scope

    def signature(self) -> Signature:
        return Signature(self._inputs, self._outputs)

    def _call(self, feeds: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        tf = self._tf
        with tf.device(self._scope):
            result = self._fn(**{name: tf.constant(value) for name, value in feeds.items()})
        return {name: value.numpy() for name, value in result.items()}

    def run(self, feeds: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        import numpy as np

        for i, record in enumerate(self._records):
            if all(np.array_equal(record[name], value) for name, value in feeds.items()):
                self._matched.add(i)
                return self._call(record)
        return self._call(feeds)

    def notes(self) -> tuple[str, ...]:
        if not self._records:
            return (f"no warm-up records in {self.version.name}/{WARMUP}",)
        return (f"{len(self._records)} warm-up records replayed at load; {len(self._matched)} of them equal samples "
                "verify ran, which were fed from the records' TensorProtos",)


class TfServingRestRunner(ServerRunner):
    """tensorflow_model_server started for this check, each sample sent over REST."""

    runtime = "tf-serving-rest"
    kind = "tf_serving"

    def __init__(self, path: Path, options: LoadOptions) -> None:
        super().__init__(path, options)
        self._signature = _signature_from_savedmodel(version_dir(path))
        # The server starts with the first run: reading the signature starts nothing.

    def _start(self) -> None:
        from bridge.runtimes.server import HOST, Server, free_port, http_json

        self._http = http_json
        self._work = Path(tempfile.mkdtemp(prefix="bridge-tf-serving-"))
        rest, grpc = free_port(), free_port()
        self._base = f"http://{HOST}:{rest}/v1/models/model"
        self._server = Server(SERVER, [SERVER, f"--port={grpc}", f"--rest_api_port={rest}", "--model_name=model",
                                       f"--model_base_path={self.path.resolve()}", "--enable_model_warmup=true"],
                              cwd=self._work, log=self._work / "server.log")
        self._server.start()
        try:
            self._server.wait_until(self._available)
        except BaseException:
            self.close()
            raise

    def _available(self) -> bool:
        status, body = self._http("GET", self._base, timeout=5)
        states = [v.get("state") for v in body.get("model_version_status", [])] if isinstance(body, dict) else []
        return status == 200 and "AVAILABLE" in states

    def signature(self) -> Signature:
        return self._signature

    def run(self, feeds: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        import numpy as np

        if self._server is None:
            self._start()
        body = {"signature_name": SERVING_KEY, "inputs": {name: value.tolist() for name, value in feeds.items()}}
        status, answer = self._http("POST", self._base + ":predict", body)
        if status != 200 or not isinstance(answer, dict) or "outputs" not in answer:
            raise RuntimeError(f"{SERVER} answered {status}: {str(answer)[:300]}")
        outputs = answer["outputs"]
        if not isinstance(outputs, dict):  # one output comes unnamed
            outputs = {self._signature.outputs[0].name: outputs}
        return {s.name: np.asarray(outputs[s.name], dtype=s.dtype) for s in self._signature.outputs}

    def timed(self, feeds: dict[str, NDArray[Any]], *, warmup: int, runs: int) -> list[int]:
        """End-to-end: JSON encoding, HTTP on 127.0.0.1, the server's work and decoding the answer."""
        for _ in range(warmup):
            self.run(feeds)
        spent = []
        for _ in range(runs):
            start = time.perf_counter_ns()
            self.run(feeds)
            spent.append(time.perf_counter_ns() - start)
        return spent

    def notes(self) -> tuple[str, ...]:
        return ("latency is end to end over REST (JSON both ways); the serving-signature row is the model alone",)



def _signature_from_savedmodel(version: Path) -> Signature:
    """serving_default's names, shapes and dtypes, read from saved_model.pb without loading the graph."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import dtypes

    proto = saved_model_pb2.SavedModel.FromString((version / "saved_model.pb").read_bytes())
    for meta in proto.meta_graphs:
        if "serve" in meta.meta_info_def.tags and SERVING_KEY in meta.signature_def:
            sig = meta.signature_def[SERVING_KEY]

            def specs(items: Any) -> tuple[TensorSpec, ...]:
                return tuple(TensorSpec(name, tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim),
                                        dtypes.as_dtype(info.dtype).name) for name, info in sorted(items))

            return Signature(specs(sig.inputs.items()), specs(sig.outputs.items()))
    raise InputError(f"{version}: no serve-tagged {SERVING_KEY!r} signature; export the SavedModel with one")
