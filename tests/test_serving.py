"""Deployment targets, each run where it is deployed: TF.js in Node.js (CPU and WebAssembly backends), the TF
Serving layout through its serve tag and serving_default (warm-up records replayed), TorchServe serving the .mar
over REST on 127.0.0.1, and Keras. No server or node process outlives a test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import RuntimeLoadError
from bridge.runtimes.server import Server
from bridge.runtimes.tfjs_runner import missing as tfjs_missing
from bridge.runtimes.torchserve_runner import missing as torchserve_missing
from tests.conftest import run_bridge

LACKING = (*tfjs_missing(), *torchserve_missing())
serving = pytest.mark.skipif(bool(LACKING), reason=f"serving runtimes unavailable here: {', '.join(LACKING)}")
pytestmark = pytest.mark.serving
TARGETS = "tfjs,tf-serving,torchserve,keras"
ROWS = {("tfjs", "node-cpu"), ("tfjs:node-wasm", "node-wasm"), ("tf-serving", "serving-signature"),
        ("torchserve", "torchserve"), ("keras", "keras")}


# Every process this test session starts inherits this mark: the check below counts only those, so a
# bridge running beside the tests (another checkout's matrix) is not taken for a leftover of theirs.
MARK = f"BRIDGE_TEST_SESSION={os.getpid()}-{time.time_ns()}"
os.environ["BRIDGE_TEST_SESSION"] = MARK.split("=", 1)[1]


def stray_processes() -> list[str]:
    """Node runners, TorchServe frontends and workers, and model servers this session started, still running."""
    found = subprocess.run(["pgrep", "-af", "runtimes/tfjs/run.js|ts.model_server|model-server.jar|model_service_worker|"
                            "tensorflow_model_server|bridge-fake-server"], capture_output=True, text=True)
    stray = []
    for line in found.stdout.splitlines():
        pid = line.split(maxsplit=1)[0]
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile
        if MARK.encode() in environ:
            stray.append(line)
    return stray


def deploy(model: Path, work: Path) -> tuple[Path, dict[str, Any], subprocess.CompletedProcess[str]]:
    out, report = work / f"{model.stem}.bridge", work / "report.json"
    result = run_bridge("verify", str(model), "--to", TARGETS, "-o", str(out), "--device", "cpu", "--samples", "3",
                        "--latency-runs", "5", "--json", str(report))
    assert report.is_file(), result.stderr[-3000:]
    return out, json.loads(report.read_text()), result


@pytest.fixture(scope="session")
def deployed_cnn(zoo_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
                 ) -> tuple[Path, dict[str, Any], subprocess.CompletedProcess[str]]:
    """The zoo's CNN converted to every deployment target and verified on the CPU, once."""
    return deploy(zoo_model("cnn"), tmp_path_factory.mktemp("deploy"))


def assert_deployed(out: Path, report: dict[str, Any], result: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], Any]:
    rows = {(r["name"], r["runtime"]): r for r in report["representations"]}
    assert ROWS <= set(rows), sorted(rows)
    for key in ROWS:
        assert rows[key]["status"] == "ok", rows[key]
        assert rows[key]["latency_ms"]["p50"] > 0
    passed = {c["dst"]: c["passed"] for c in report["cumulative"]}
    assert all(passed[name] for name, _ in ROWS), passed
    rest = rows.get(("tf-serving:tf-serving-rest", "tf-serving-rest"))
    if rest is not None and rest["status"] == "unavailable":  # tensorflow_model_server cannot be installed here
        assert "tensorflow_model_server on PATH" in rest["error"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert stray_processes() == []
    return rows


@serving
@pytest.mark.slow
def test_cnn_verifies_in_every_deployed_runtime(deployed_cnn: tuple[Path, dict[str, Any], subprocess.CompletedProcess[str]]) -> None:
    out, report, result = deployed_cnn
    rows = assert_deployed(out, report, result)
    # TorchServe: latency end to end, the forward pass timed in the handler beside it.
    served = rows[("torchserve", "torchserve")]
    assert 0 < served["model_latency_ms"]["p50"] < served["latency_ms"]["p50"]
    # TF Serving: every verify sample is one of the warm-up records, fed from its TensorProto.
    assert any("3 of them equal samples verify ran" in note for note in rows[("tf-serving", "serving-signature")]["notes"])


@serving
@pytest.mark.slow
def test_each_target_is_laid_out_as_its_server_loads_it(deployed_cnn: tuple[Path, dict[str, Any], Any]) -> None:
    out, _, _ = deployed_cnn
    manifest = json.loads((out / "manifest.json").read_text())
    artifacts = {a["format"]: a for a in manifest["artifacts"]}
    version = out / "tf-serving" / "model" / "1"
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    assert (version / "assets.extra" / "tf_serving_warmup_requests").stat().st_size > 0
    assert artifacts["tf-serving"]["options"]["warmup"]["records"] == 8
    names = [t["name"] for t in artifacts["tf-serving"]["inputs"] + artifacts["tf-serving"]["outputs"]]
    assert names == ["x", "output_0"]  # serving_default keeps the source's names
    import zipfile

    with zipfile.ZipFile(out / "torchserve" / "model.mar") as archive:
        listed = set(archive.namelist())
    assert {"MAR-INF/MANIFEST.json", "handler.py", "bridge-signature.json", "cnn.pt2"} <= listed
    assert artifacts["torchserve"]["tool"]["name"] == "torch-model-archiver"
    assert [artifacts[f]["hop"] for f in ("tf-serving", "torchserve", "tfjs")] == ["tf->tf-serving", "torch->torchserve",
                                                                                    "tf->tfjs"]
    tfjs = artifacts["tfjs"]
    assert tfjs["tool"] == {"name": "tensorflowjs", "version": "4.22.0"}
    assert tfjs["options"]["untransposed_fused_matmuls"] == 1  # the CNN's one fully connected layer


def verify_as_source(package: Path, to: str, out: Path) -> dict[str, dict[str, Any]]:
    """Verify a deployed package as the source of a conversion to `to`; its report's rows by name."""
    result = run_bridge("verify", str(package), "--to", to, "-o", str(out), "--device", "cpu", "--samples", "2",
                        "--latency-runs", "2", "--json", str(out.with_suffix(".json")))
    assert result.returncode == 0, result.stderr[-3000:]
    assert stray_processes() == []
    return {r["name"]: r for r in json.loads(out.with_suffix(".json").read_text())["representations"]}


@serving
@pytest.mark.slow
def test_a_served_package_is_verified_as_a_source(deployed_cnn: tuple[Path, dict[str, Any], Any], tmp_path: Path) -> None:
    """The .mar runs in TorchServe as the source; the model inside it is taken out and checked against ONNX."""
    rows = verify_as_source(deployed_cnn[0] / "torchserve" / "model.mar", "onnx", tmp_path / "mar")
    assert rows["source"]["runtime"] == "torchserve" and rows["torch"]["status"] == rows["onnx"]["status"] == "ok"
    manifest = json.loads((tmp_path / "mar" / "manifest.json").read_text())
    torch = next(a for a in manifest["artifacts"] if a["format"] == "torch")
    assert torch["hop"] == "torchserve->torch" and torch["options"] == {"extracted": "cnn.pt2"}


@serving
@pytest.mark.heavy  # 110 s in CI; TF Serving's layout is read in every-deployed-runtime, its refusals in the hostile corpus
def test_a_tf_serving_folder_is_verified_as_a_source(deployed_cnn: tuple[Path, dict[str, Any], Any], tmp_path: Path) -> None:
    """The folder runs through its serving signature as the source; its highest version is the SavedModel taken on."""
    rows = verify_as_source(deployed_cnn[0] / "tf-serving" / "model", "tflite", tmp_path / "tfs")
    assert rows["source"]["runtime"] == "serving-signature" and rows["tf"]["status"] == rows["tflite"]["status"] == "ok"
    manifest = json.loads((tmp_path / "tfs" / "manifest.json").read_text())
    tf = next(a for a in manifest["artifacts"] if a["format"] == "tf")
    assert tf["hop"] == "tf-serving->tf" and tf["options"] == {"version": 1}
    assert not (tmp_path / "tfs" / "tf" / "saved_model" / "assets.extra").exists()


@serving
@pytest.mark.slow
@pytest.mark.heavy
def test_mobilenet_v3_small_verifies_in_every_deployed_runtime(zoo_model: Callable[[str], Path], tmp_path: Path) -> None:
    assert_deployed(*deploy(zoo_model("mobilenet_v3_small"), tmp_path))


def test_a_server_that_does_not_come_up_is_an_error_with_its_log_and_is_gone(tmp_path: Path) -> None:
    server = Server("slow server", [sys.executable, "-c", "print('loading the model', flush=True); import time; time.sleep(600)"],
                    cwd=tmp_path, log=tmp_path / "server.log")
    server.start()
    pid = server.pid
    with pytest.raises(RuntimeLoadError, match=r"did not come up within 2 s; its log .* ends:\nloading the model"):
        server.wait_until(lambda: False, timeout=2)
    assert pid is not None and not _alive(pid)


def test_a_server_is_stopped_when_the_process_that_started_it_is_killed(tmp_path: Path) -> None:
    """The runner's process killed outright (a timeout, SIGKILL): the watchdog ends the server's group."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from bridge.runtimes.server import Server
        server = Server("s", [sys.executable, "-c", "import time; time.sleep(600)"], cwd=Path({str(tmp_path)!r}),
                        log=Path({str(tmp_path)!r}) / "log")
        server.start()
        print(server.pid, flush=True)
        time.sleep(600)
    """)
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    pid = int(owner.stdout.readline())
    assert _alive(pid)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid)


@serving
@pytest.mark.heavy  # 160 s in CI; the served signature is what every-deployed-runtime compares
def test_tf_serving_over_rest_against_a_stand_in_server(deployed_cnn: tuple[Path, dict[str, Any], Any], tmp_path: Path) -> None:
    """tensorflow_model_server cannot be installed here: the REST runner is checked against a stand-in that
    implements the two calls it makes (model status, :predict in the columnar format) from the SavedModel.
    What this proves is bridge's side (ports, readiness, JSON both ways, stopping); the real binary is not run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tensorflow_model_server"
    fake.write_text(f"#!{sys.executable}\n" + FAKE_SERVER, encoding="utf-8")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, "-m", "bridge", "verify", str(deployed_cnn[0] / "tf-serving" / "model"), "--to",
                           "tf", "-o", str(tmp_path / "cnn.bridge"), "--device", "cpu", "--samples", "2",
                           "--latency-runs", "2", "--json", str(tmp_path / "r.json")], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    rows = {r["name"]: r for r in report["representations"]}
    assert rows["source:tf-serving-rest"]["status"] == "ok", rows["source:tf-serving-rest"]
    assert {c["dst"]: c["passed"] for c in report["hops"]}["source:tf-serving-rest"]  # against serving-signature
    assert stray_processes() == []


FAKE_SERVER = '''
# bridge-fake-server: a stand-in for tensorflow_model_server's REST API, for tests only.
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
import glob, os
import tensorflow as tf
version = max((p for p in glob.glob(os.path.join(args["model_base_path"], "*")) if os.path.basename(p).isdigit()),
              key=lambda p: int(os.path.basename(p)))
fn = tf.saved_model.load(version, tags=["serve"]).signatures["serving_default"]
name = args["model_name"]

class Handler(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == f"/v1/models/{name}":
            self.answer(200, {"model_version_status": [{"version": os.path.basename(version), "state": "AVAILABLE"}]})
        else:
            self.answer(404, {"error": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _, spec = fn.structured_input_signature
        feeds = {k: tf.constant(v, dtype=spec[k].dtype) for k, v in body["inputs"].items()}
        result = {k: v.numpy().tolist() for k, v in fn(**feeds).items()}
        self.answer(200, {"outputs": result if len(result) > 1 else next(iter(result.values()))})

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(args["rest_api_port"])), Handler).serve_forever()
'''


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
