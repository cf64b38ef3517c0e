"""Does bridge's latency p50 agree with an independent timing loop of the same runtime call?

For each zoo model (default: cnn, resnet_block): export it, ``bridge convert X.pt2 --to all``,
then per repetition (a) ``bridge.verify.run.verify(dir, devices=("cpu",), samples=2,
latency_runs=RUNS)`` and (b) for every representation, a separate process running
bench/_timing_child.py: the plain runtime call (onnxruntime ``InferenceSession.run``, the LiteRT
signature runner, the SavedModel's ``serving_default``, ``torch.export.load(...).module()``),
fed sample 0 of the inputs verify saved, transposed by the manifest's perm, timed with
time.perf_counter over RUNS calls after the same warm-up. Requirement: |bridge/independent - 1|
<= 0.15 for the median p50 over the repetitions, for every representation (a failed hop or a
representation without a bridge p50 is a miss). Exits 1 when the requirement is missed.

    .venv/bin/python bench/latency_agreement.py [--models cnn,resnet_block] [--reps 3] [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import PYTHON, ROOT, machine, median, timed_run, versions  # noqa: E402

CHILD = Path(__file__).resolve().parent / "_timing_child.py"
TOLERANCE = 0.15
# The environment bridge gives its runtime children (bridge/isolation.py), so the two loops run
# under the same settings: oneDNN off for TensorFlow changes its kernels and so its speed.
CHILD_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0", "PYTHONUNBUFFERED": "1",
             "PYTHONWARNINGS": "ignore", "CUDA_VISIBLE_DEVICES": ""}


def _representations(out_dir: Path) -> list[dict[str, object]]:
    """(name, format, path, input specs) for the source and each artifact, as verify names them."""
    from bridge.manifest import Manifest

    manifest = Manifest.read(out_dir)
    src = manifest.source
    src_path = str(out_dir / src.materialized) if src.materialized else src.path
    reps = [{"name": "source", "format": src.format.value, "path": src_path,
             "inputs": [t.to_json() for t in src.signature.inputs]}]
    for art in manifest.artifacts:
        reps.append({"name": art.key, "format": art.format.value, "path": str(out_dir / art.path),
                     "inputs": [t.to_json() for t in art.signature.inputs]})
    return reps


def _independent_p50(rep: dict[str, object], inputs: Path, work: Path, warmup: int, runs: int) -> float:
    specs = work / f"{rep['name']}.specs.json"
    specs.write_text(json.dumps(rep["inputs"]), encoding="utf-8")
    _, proc = timed_run([PYTHON, str(CHILD), str(rep["format"]), str(rep["path"]), str(inputs), str(specs),
                         str(warmup), str(runs)], env={**os.environ, **CHILD_ENV})
    line = next(l for l in proc.stdout.splitlines() if l.startswith("P50_MS "))
    return float(line.split()[1])


def run_model(name: str, work: Path, reps: int, runs: int) -> list[dict[str, object]]:
    from bridge import defaults
    from bridge.verify.run import verify
    from zoo.export import export

    model_dir = work / name
    model_dir.mkdir()
    pt2 = export(name, model_dir, force=True).model_path
    out = model_dir / "out"
    # A failed hop still publishes the artifacts made before it (exit 2): time those, say which failed.
    _, proc = timed_run([PYTHON, "-m", "bridge", "convert", str(pt2), "--to", "all", "-o", str(out), "--force",
                         "--quiet"], cwd=ROOT, check=False)
    if proc.returncode != 0:
        print(f"{name}: convert exited {proc.returncode}: {proc.stderr.strip()[-400:]}", flush=True)
    if not (out / "manifest.json").is_file():
        # Nothing was published: a missed requirement, not an empty (and so vacuously met) model.
        return [{"model": name, "representation": "all", "format": None, "bridge_p50_ms": None,
                 "independent_p50_ms": None, "ratio": None, "met": False,
                 "error": f"convert exited {proc.returncode}, no manifest"}]
    representations = _representations(out)
    failures = [{"model": name, "representation": f["hop"], "format": None, "bridge_p50_ms": None,
                 "independent_p50_ms": None, "ratio": None, "met": False, "error": f"hop failed: {f['error']}"}
                for f in json.loads((out / "manifest.json").read_text()).get("failures", [])]
    inputs = model_dir / "inputs.npz"
    bridge_p50: dict[str, list[float]] = {}
    indep_p50: dict[str, list[float]] = {}
    for i in range(reps):
        def bridge_side() -> None:
            report = verify(out, devices=("cpu",), samples=2, latency_runs=runs, save_inputs=inputs)
            for rep in report.representations:
                if rep.latency is not None:
                    bridge_p50.setdefault(rep.name, []).append(rep.latency.p50)
                else:
                    print(f"  {name}/{rep.name}: bridge has no latency ({rep.status}: {rep.error})", flush=True)

        def independent_side() -> None:
            for rep in representations:
                indep_p50.setdefault(str(rep["name"]), []).append(
                    _independent_p50(rep, inputs, model_dir, defaults.WARMUP_RUNS, runs))

        if i == 0:
            bridge_side()  # the first verify writes the inputs file the independent loop reads
            independent_side()
        else:
            # Alternate the order from the second repetition on.
            for side in ((independent_side, bridge_side) if i % 2 else (bridge_side, independent_side)):
                side()
        print(f"{name} rep {i + 1}: " + ", ".join(
            f"{k} bridge {bridge_p50.get(k, [float('nan')])[-1]:.3f} / indep {indep_p50[k][-1]:.3f} ms" for k in indep_p50), flush=True)
    rows = []
    for rep in representations:
        key = str(rep["name"])
        b, ind = bridge_p50.get(key), indep_p50.get(key)
        if not b or not ind:
            rows.append({"model": name, "representation": key, "format": rep["format"], "bridge_p50_ms": None,
                         "independent_p50_ms": median(ind) if ind else None, "ratio": None, "met": False})
            continue
        ratio = median(b) / median(ind)
        rows.append({"model": name, "representation": key, "format": rep["format"],
                     "bridge_p50_ms": median(b), "independent_p50_ms": median(ind), "ratio": ratio,
                     "met": abs(ratio - 1) <= TOLERANCE, "bridge_all": b, "independent_all": ind})
    return rows + failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="cnn,resnet_block")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json", type=Path, help="Write the results here as JSON.")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        for name in args.models.split(","):
            rows.extend(run_model(name, Path(tmp), args.reps, args.runs))
    results = {"machine": machine(), "versions": versions(), "reps": args.reps, "runs": args.runs,
               "tolerance": TOLERANCE, "rows": rows, "met": bool(rows) and all(r["met"] for r in rows)}
    print(json.dumps(results, indent=2))
    print("\nmodel          representation    bridge p50 ms  independent p50 ms  ratio")
    for r in rows:
        ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "n/a"
        bp = f"{r['bridge_p50_ms']:.3f}" if r["bridge_p50_ms"] is not None else "n/a"
        ip = f"{r['independent_p50_ms']:.3f}" if r["independent_p50_ms"] is not None else "n/a"
        print(f"{r['model']:<14} {r['representation']:<17} {bp:>13} {ip:>19}  {ratio}{'' if r['met'] else '  MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if not results["met"]:
        print(f"\nMISSED: some p50 ratio is outside +/-{TOLERANCE:.0%} or a representation could not be timed")
    return 0 if results["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
