"""TorchServe runner: a ``.mar`` served by a real TorchServe on 127.0.0.1, each sample sent over REST.

The server is started for this check alone: its own model store, log and temporary directories,
token authorisation off, the model API on, the inference, management and metrics APIs (and the
gRPC ones, which TorchServe always opens) on ephemeral 127.0.0.1 ports, one worker. It is stopped with its workers when the runner closes,
also when the check fails or is interrupted (`bridge.runtimes.server.Server`).

Before anything starts, the archive is checked: a zip with ``MAR-INF/MANIFEST.json``, no entry
outside itself, and the handler bridge generates for the signature it carries
(``bridge-signature.json``). A handler bridge did not write is code from the file: it runs only
with ``--trust-code``.

Latency is end to end (JSON over HTTP, TorchServe's queue, the worker); the model alone, timed in
the handler, is reported beside it (``model_latency_ms``).
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from bridge import safety
from bridge.errors import DeviceUnavailableError, InputError, UnsafeInputError
from bridge.runtimes.base import LoadOptions
from bridge.runtimes.server import ServerRunner
from bridge.signature import Signature, TensorSpec

MANIFEST = "MAR-INF/MANIFEST.json"


def missing() -> tuple[str, ...]:
    """Java 17 or newer, which TorchServe's frontend needs."""
    return () if shutil.which("java") else ("java (a Java 17 runtime on PATH, for TorchServe's frontend)",)


def read_archive(path: Path, *, trust_code: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The archive's MANIFEST.json and bridge-signature.json, checked; an InputError naming the file and the fix."""
    from bridge.hops.torch_to_torchserve import HANDLER, SIGNATURE_FILE, handler_source

    safety.check_archive(path)
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        if MANIFEST not in names:
            raise InputError(f"{path}: a .mar without {MANIFEST}; make it with torch-model-archiver "
                             "(bridge convert MODEL --to torchserve)")
        try:
            manifest = json.loads(archive.read(MANIFEST))
            model = manifest["model"]
            handler_name = str(model["handler"]).split(":")[0]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"{path}: {MANIFEST} is not a TorchServe manifest ({exc}); make the archive again") from None
        if SIGNATURE_FILE not in names:
            raise InputError(f"{path}: no {SIGNATURE_FILE} inside, so bridge cannot tell its inputs; "
                             "make the archive with bridge convert MODEL --to torchserve")
        try:
            described = json.loads(archive.read(SIGNATURE_FILE))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: {SIGNATURE_FILE} is not valid JSON ({exc}); make the archive again") from None
        serialized = str(model.get("serializedFile", ""))
        if serialized not in names or serialized != described.get("serialized_file"):
            raise InputError(f"{path}: the serialized model {serialized!r} is missing or not the one "
                             f"{SIGNATURE_FILE} names; make the archive again")
        handler = archive.read(handler_name).decode("utf-8", "replace") if handler_name in names else None
    if handler is None or (handler_name != HANDLER or handler != handler_source(described)) and not trust_code:
        raise UnsafeInputError(f"{path}: its handler {handler_name!r} is not the one bridge generates; serving it runs "
                               "that code: pass --trust-code if you trust the archive, or make it with bridge convert")
    return manifest, described


class TorchServeRunner(ServerRunner):
    runtime = "torchserve"

    def __init__(self, path: Path, options: LoadOptions) -> None:
        super().__init__(path, options)
        if options.device != "cpu":
            raise DeviceUnavailableError(f"{options.device}: not available (bridge serves the archive on the CPU: "
                                         "its handler loads the model there)")
        self._manifest, described = read_archive(path, trust_code=options.trust_code)
        self.kind = "exported_program" if str(described["serialized_file"]).endswith(".pt2") else "torchscript"

        def specs(items: list[dict[str, Any]]) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(str(s["name"]), tuple(s["shape"]), str(s["dtype"])) for s in items)

        self._signature = Signature(specs(described["inputs"]), specs(described["outputs"]))
        self._model_ns: list[int] = []
        lacking = missing()
        if lacking:
            from bridge.errors import RuntimeLoadError

            raise RuntimeLoadError(f"TorchServe needs {lacking[0]}")
        # The server starts with the first run: reading the signature starts nothing.

    def _start(self) -> None:
        from bridge.runtimes.server import HOST, Server, free_port, http_json

        self._http = http_json
        self._work = Path(tempfile.mkdtemp(prefix="bridge-torchserve-"))
        store, logs, tmp = self._work / "store", self._work / "logs", self._work / "tmp"
        for folder in (store, logs, tmp):
            folder.mkdir()
        shutil.copyfile(self.path, store / "model.mar")
        inference, management, metrics, grpc_inference, grpc_management = (free_port() for _ in range(5))
        self._inference = f"http://{HOST}:{inference}"
        self._management = f"http://{HOST}:{management}"
        config = self._work / "config.properties"
        config.write_text("\n".join([
            f"inference_address={self._inference}", f"management_address={self._management}",
            f"metrics_address=http://{HOST}:{metrics}", f"grpc_inference_address={HOST}",
            f"grpc_inference_port={grpc_inference}", f"grpc_management_address={HOST}",
            f"grpc_management_port={grpc_management}", f"model_store={store}", "load_models=model.mar",
            "disable_token_authorization=true", "enable_model_api=true", "default_workers_per_model=1",
            "install_py_dep_per_model=false", "number_of_netty_threads=2", "netty_client_threads=2",
            "default_response_timeout=120", "disable_system_metrics=true", ""]), encoding="utf-8")
        command = [sys.executable, "-m", "ts.model_server", "--start", "--foreground", "--ncs", "--disable-token-auth",
                   "--enable-model-api", "--model-store", str(store), "--ts-config", str(config)]
        env = {"TMPDIR": str(tmp), "TEMP": str(tmp), "LOG_LOCATION": str(logs), "METRICS_LOCATION": str(logs),
               "CUDA_VISIBLE_DEVICES": ""}
        self._server = server = Server("TorchServe", command, cwd=self._work, log=logs / "server.log", env=env)
        server.start()
        try:
            server.wait_until(self._ready)
        except BaseException:
            self.close()
            raise

    def _ready(self) -> bool:
        status, body = self._http("GET", f"{self._management}/models/model", timeout=5)
        if status != 200 or not isinstance(body, list) or not body:
            return False
        return any(w.get("status") == "READY" for w in body[0].get("workers", []))

    def signature(self) -> Signature:
        return self._signature

    def _predict(self, feeds: dict[str, NDArray[Any]]) -> tuple[dict[str, NDArray[Any]], int]:
        import numpy as np

        if self._server is None:
            self._start()
        body = {"inputs": {name: {"dtype": str(value.dtype), "shape": list(value.shape),
                                  "b64": base64.b64encode(np.ascontiguousarray(value).tobytes()).decode()}
                           for name, value in feeds.items()}}
        status, answer = self._http("POST", f"{self._inference}/predictions/model", body, timeout=120)
        if status != 200 or not isinstance(answer, dict) or "outputs" not in answer:
            raise RuntimeError(f"TorchServe answered {status}: {str(answer)[:300]}")
        outputs = {name: np.frombuffer(base64.b64decode(item["b64"]), dtype=np.dtype(item["dtype"])).reshape(item["shape"])
                   for name, item in answer["outputs"].items()}
        return outputs, int(answer.get("model_ns", 0))

    def run(self, feeds: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        outputs, _ = self._predict(feeds)
        return outputs

    def timed(self, feeds: dict[str, NDArray[Any]], *, warmup: int, runs: int) -> list[int]:
        """End to end as a client sees it; the handler's own timing of the forward pass is kept for `model_latency`."""
        for _ in range(warmup):
            self._predict(feeds)
        spent, self._model_ns = [], []
        for _ in range(runs):
            start = time.perf_counter_ns()
            _, model_ns = self._predict(feeds)
            spent.append(time.perf_counter_ns() - start)
            self._model_ns.append(model_ns)
        return spent

    def model_latency(self) -> list[int]:
        return list(self._model_ns)

    def notes(self) -> tuple[str, ...]:
        return ("latency is end to end over REST (JSON, TorchServe's queue and worker); model_latency_ms is the "
                "forward pass timed in the handler",)

