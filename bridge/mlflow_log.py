"""A verify report logged to MLflow: params, metrics and the reports as artifacts of a run.

``bridge verify ... --mlflow`` and ``bridge.verify(..., mlflow=True)`` log to the active run if there
is one, else to a new run, under the tracking URI the user set (``MLFLOW_TRACKING_URI`` or
``mlflow.set_tracking_uri``); with none set, to a local file store ``./mlruns``. MLflow 3 keeps the
file store only when asked (``MLFLOW_ALLOW_FILE_STORE``): bridge asks for it for that default alone.

- params: the route, the candidate each hop kept, every tool version, the inputs' sha256, seed and
  sample count, bridge's version;
- metrics: per comparison and output, ``drift.KIND.SRC-DST.DEVICE.OUTPUT.max_abs`` (and ``sqnr_db``
  for quantized artifacts), ``passed.KIND.SRC-DST.DEVICE`` (1 or 0); per representation and device,
  ``latency_ms.NAME.DEVICE.p50`` / ``p90`` / ``p99``; ``passed`` and ``exit_code`` for the run;
- artifacts: ``bridge/manifest.json``, ``bridge/report.json``, ``bridge/report.html``.

Needs the ``mlflow`` extra (``mlflow-skinny``).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from bridge.errors import MissingExtraError

DEFAULT_STORE = "mlruns"
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-./ ]")


def metric_name(*parts: str) -> str:
    """MLflow takes letters, digits, ``_ - . / `` and space in a key: anything else becomes ``_``."""
    return ".".join(_UNSAFE.sub("_", part) for part in parts)


def params_of(report: Any, manifest: Any) -> dict[str, str]:
    params = {"bridge_version": report.bridge_version, "inputs.sha256": report.inputs.sha256,
              "inputs.samples": str(report.inputs.samples), "inputs.seed": str(report.inputs.seed)}
    if manifest is not None:
        params["route"] = "; ".join(manifest.route)
        params["source"] = manifest.source.path[:400]
        for artifact in manifest.artifacts:
            params[metric_name("candidate", artifact.key)] = artifact.candidate or "-"
        for tool, version in manifest.tool_versions.items():
            params[metric_name("version", tool)] = version
    return params


def metrics_of(report: Any) -> dict[str, float]:
    metrics: dict[str, float] = {"passed": float(report.passed), "exit_code": float(report.exit_code)}
    for comparison in (*report.hops, *report.cumulative, *report.devices):
        where = (comparison.kind, f"{comparison.src}-{comparison.dst}", comparison.device)
        metrics[metric_name("passed", *where)] = float(comparison.passed)
        for output in comparison.outputs:
            for figure in ("max_abs", "sqnr_db"):
                value = getattr(output, figure)
                if value is not None and math.isfinite(value) and (figure == "max_abs" or output.tolerance.quantized):
                    metrics[metric_name("drift", *where, output.name, figure)] = float(value)
    for rep in report.representations:
        if rep.latency is not None:
            for figure in ("p50", "p90", "p99"):
                metrics[metric_name("latency_ms", rep.name, rep.device, figure)] = float(getattr(rep.latency, figure))
    return metrics


def log_report(report: Any, *, run_name: str | None = None) -> str:
    """Log `report` (and the manifest it names, when it reads) to MLflow; the run's id."""
    try:
        import mlflow
    except ImportError as exc:
        raise MissingExtraError("--mlflow needs MLflow: pip install 'bridge[mlflow]'") from exc
    from bridge.errors import BridgeError
    from bridge.manifest import Manifest

    if not os.environ.get("MLFLOW_TRACKING_URI") and not mlflow.tracking._tracking_service.utils.is_tracking_uri_set():  # type: ignore[no-untyped-call]  # noqa: SLF001
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store only when asked
        mlflow.set_tracking_uri(Path(DEFAULT_STORE).absolute().as_uri())
    manifest = None
    try:
        manifest = Manifest.read(Path(report.manifest).parent)
    except (BridgeError, OSError, ValueError):
        pass
    active = mlflow.active_run()
    run = active or mlflow.start_run(run_name=run_name or f"bridge verify {Path(report.manifest).parent.name}")
    try:
        mlflow.log_params(params_of(report, manifest))
        mlflow.log_metrics(metrics_of(report))
        mlflow.set_tag("bridge.verdict", "passed" if report.passed else "failed")
        with tempfile.TemporaryDirectory(prefix="bridge-mlflow-") as tmp:
            for name, kind in (("report.json", "json"), ("report.html", "html")):
                path = Path(tmp, name)
                path.write_text(report.render(kind), encoding="utf-8")
                mlflow.log_artifact(str(path), artifact_path="bridge")
            if Path(report.manifest).is_file():
                mlflow.log_artifact(report.manifest, artifact_path="bridge")
    finally:
        if active is None:
            mlflow.end_run()
    return str(run.info.run_id)
