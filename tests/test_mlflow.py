"""verify's report logged to MLflow, read back with MLflow's own client from a local file store."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")


def _client(store: Path) -> object:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store.as_uri())


def test_every_metric_param_and_report_reads_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.mlflow_log import log_report, metrics_of
    from tests.unit.test_report import _report

    store = tmp_path / "store"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    report = _report(drift=0.5)
    run_id = log_report(report, run_name="drifting")
    client = _client(store)
    run = client.get_run(run_id)  # type: ignore[attr-defined]
    expected = metrics_of(report)
    assert run.data.metrics == pytest.approx(expected) and expected["passed"] == 0.0
    assert run.data.metrics["drift.hop.source-onnx.cpu.y.max_abs"] == pytest.approx(0.5)
    assert run.data.metrics["latency_ms.onnx.cpu.p50"] == pytest.approx(report.representations[1].latency.p50)
    assert run.data.params["inputs.sha256"] == report.inputs.sha256 and run.data.tags["bridge.verdict"] == "failed"
    files = {a.path for a in client.list_artifacts(run_id, "bridge")}  # type: ignore[attr-defined]
    assert files == {"bridge/report.json", "bridge/report.html"}  # the manifest it names does not exist here
    with mlflow.start_run() as active:  # logged into the run the user has open, which stays open
        assert log_report(report) == active.info.run_id and mlflow.active_run() is not None


@pytest.mark.slow
def test_verify_mlflow_logs_to_mlruns_by_default(tmp_path: Path, zoo_model: Callable[[str], Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    result = subprocess.run([sys.executable, "-m", "bridge", "verify", str(zoo_model("mlp")), "--to", "onnx", "-o",
                             str(tmp_path / "mlp.bridge"), "--device", "cpu", "--latency-runs", "2", "--mlflow"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = _client(tmp_path / "mlruns")
    runs = client.search_runs(["0"])  # type: ignore[attr-defined]
    assert len(runs) == 1 and runs[0].data.metrics["passed"] == 1.0
    assert runs[0].data.params["route"] == "torch -> onnx" and runs[0].data.params["candidate.onnx"] == "dynamo"
    files = {a.path for a in client.list_artifacts(runs[0].info.run_id, "bridge")}  # type: ignore[attr-defined]
    assert files == {"bridge/manifest.json", "bridge/report.json", "bridge/report.html"}
