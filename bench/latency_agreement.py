"""Does bridge's latency p50 agree with an independent timing loop of the same runtime call?

For each zoo model (default: cnn, resnet_block): export it, ``bridge convert X.pt2 --to all``, then
per repetition:

1. DECISIVE, in-process interleaved (bench/_interleaved_child.py, one process per representation):
   bridge's own path (``open_runner(fmt, path, LoadOptions(device="cpu", input_specs=...))``, feeds
   as verify builds them, ``bridge.verification.timing.measure(runner.run, feeds, runner.synchronize,
   warmup=W, runs=BLOCK_RUNS)``) and an independent perf_counter_ns loop of the raw runtime call
   written here without bridge (its own load: plain onnxruntime ``session.run``, the LiteRT
   signature runner, the SavedModel's ``serving_default``, ``torch.export.load(...).module()``
   under no_grad), alternating BLOCKS pairs of blocks in the same process, PAUSE seconds before
   each block. p50 of each side's pooled samples and their ratio.
2. For information only, CROSS-PROCESS (subject to per-process variance): the p50 from a real
   ``bridge.verification.run.verify(dir, devices=("cpu",), samples=2, latency_runs=RUNS)`` vs the
   independent loop in its own fresh process (bench/_timing_child.py).

Requirement: |bridge/independent - 1| <= 0.15 for the median over the repetitions of the in-process
ratio, for every representation (a failed hop or an untimed representation is a miss).
Exits 1 when the requirement is missed.

    .venv/bin/python bench/latency_agreement.py [--models cnn,resnet_block] [--reps 3] [--runs 50]
        [--blocks 10] [--block-runs 20] [--pause 0.05] [--json F]
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

HERE = Path(__file__).resolve().parent
CROSS_CHILD = HERE / "_timing_child.py"
INTERLEAVED_CHILD = HERE / "_interleaved_child.py"
TOLERANCE = 0.15
# The environment bridge gives its runtime children (bridge/isolation.py), so both loops run under
# the same settings: oneDNN off for TensorFlow changes its kernels and so its speed.
CHILD_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0", "PYTHONUNBUFFERED": "1",
             "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": ""}


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


def _specs_file(rep: dict[str, object], work: Path) -> Path:
    specs = work / f"{rep['name']}.specs.json"
    specs.write_text(json.dumps(rep["inputs"]), encoding="utf-8")
    return specs


def _cross_process_p50(rep: dict[str, object], inputs: Path, work: Path, warmup: int, runs: int) -> float:
    _, proc = timed_run([PYTHON, str(CROSS_CHILD), str(rep["format"]), str(rep["path"]), str(inputs),
                         str(_specs_file(rep, work)), str(warmup), str(runs)], env={**os.environ, **CHILD_ENV})
    line = next(text for text in proc.stdout.splitlines() if text.startswith("P50_MS "))
    return float(line.split()[1])


def _interleaved(out: Path, rep: dict[str, object], inputs: Path, work: Path, warmup: int, blocks: int,
                 block_runs: int, pause: float) -> dict[str, object]:
    _, proc = timed_run([PYTHON, str(INTERLEAVED_CHILD), str(out), str(rep["name"]), str(inputs),
                         str(_specs_file(rep, work)), str(warmup), str(blocks), str(block_runs), str(pause)],
                        env={**os.environ, **CHILD_ENV}, cwd=ROOT)
    line = next(text for text in proc.stdout.splitlines() if text.startswith("RESULT "))
    result: dict[str, object] = json.loads(line.removeprefix("RESULT "))
    if not result["same_feeds"]:
        raise RuntimeError(f"{rep['name']}: bridge's feeds and the independent loop's feeds differ")
    return result


def _miss(name: str, key: str, fmt: object, error: str) -> dict[str, object]:
    return {"model": name, "representation": key, "format": fmt, "ratio": None, "met": False, "error": error}


def run_model(name: str, work: Path, reps: int, runs: int, blocks: int, block_runs: int,
              pause: float) -> list[dict[str, object]]:
    from bridge import defaults
    from bridge.verification.run import verify
    from bridge.zoo.export import export

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
        return [_miss(name, "all", None, f"convert exited {proc.returncode}, no manifest")]
    representations = _representations(out)
    failures = [_miss(name, f["hop"], None, f"hop failed: {f['error']}")
                for f in json.loads((out / "manifest.json").read_text()).get("failures", [])]
    inputs = model_dir / "inputs.npz"
    warmup = defaults.WARMUP_RUNS
    verify_p50: dict[str, list[float]] = {}
    cross_p50: dict[str, list[float]] = {}
    inproc: dict[str, list[dict[str, object]]] = {}
    for i in range(reps):
        def bridge_side() -> None:
            report = verify(out, devices=("cpu",), samples=2, latency_runs=runs, save_inputs=inputs)
            for rep in report.representations:
                if rep.latency is not None:
                    verify_p50.setdefault(rep.name, []).append(rep.latency.p50)
                else:
                    print(f"  {name}/{rep.name}: bridge has no latency ({rep.status}: {rep.error})", flush=True)

        def independent_side() -> None:
            for rep in representations:
                cross_p50.setdefault(str(rep["name"]), []).append(
                    _cross_process_p50(rep, inputs, model_dir, warmup, runs))

        # The first verify writes the inputs file the other loops read; then the order alternates.
        for side in ((independent_side, bridge_side) if i % 2 else (bridge_side, independent_side)):
            side()
        for rep in representations:
            key = str(rep["name"])
            if key in verify_p50:  # a representation verify could not run is reported as a miss below
                inproc.setdefault(key, []).append(
                    _interleaved(out, rep, inputs, model_dir, warmup, blocks, block_runs, pause))
        print(f"{name} rep {i + 1}: " + "; ".join(
            f"{k} in-process {r[-1]['bridge_p50_ms']:.4f}/{r[-1]['independent_p50_ms']:.4f} ms"
            f" (cross-process {verify_p50[k][-1]:.4f}/{cross_p50[k][-1]:.4f})" for k, r in inproc.items()), flush=True)
    rows = []
    for rep in representations:
        key = str(rep["name"])
        if key not in inproc:
            rows.append(_miss(name, key, rep["format"], "bridge verify has no latency for it"))
            continue
        b = [float(r["bridge_p50_ms"]) for r in inproc[key]]
        ind = [float(r["independent_p50_ms"]) for r in inproc[key]]
        ratios = [x / y for x, y in zip(b, ind, strict=False)]
        ratio = median(ratios)
        v, c = verify_p50[key], cross_p50[key]
        rows.append({
            "model": name, "representation": key, "format": rep["format"],
            "bridge_p50_ms": median(b), "independent_p50_ms": median(ind), "ratio": ratio,
            "met": abs(ratio - 1) <= TOLERANCE, "ratios": ratios, "bridge_all": b, "independent_all": ind,
            "blocks": [{"bridge": r["bridge_block_p50_ms"], "independent": r["independent_block_p50_ms"]}
                       for r in inproc[key]],
            "cross_process": {"verify_p50_ms": median(v), "independent_p50_ms": median(c),
                              "ratio": median(v) / median(c), "verify_all": v, "independent_all": c},
        })
    return rows + failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="cnn,resnet_block")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--runs", type=int, default=50, help="verify's latency_runs (cross-process figure)")
    parser.add_argument("--blocks", type=int, default=10, help="pairs of blocks in the in-process comparison")
    parser.add_argument("--block-runs", type=int, default=20, help="timed runs per block")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds of sleep before each block")
    parser.add_argument("--json", type=Path, help="Write the results here as JSON.")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        for name in args.models.split(","):
            rows.extend(run_model(name, Path(tmp), args.reps, args.runs, args.blocks, args.block_runs, args.pause))
    results = {"machine": machine(), "versions": versions(), "reps": args.reps, "runs": args.runs,
               "blocks": args.blocks, "block_runs": args.block_runs, "pause_s": args.pause,
               "tolerance": TOLERANCE, "rows": rows, "met": bool(rows) and all(r["met"] for r in rows)}
    print(json.dumps(results, indent=2))

    def ms(value: object) -> str:
        return f"{value:.4f}" if isinstance(value, float) else "n/a"

    print(f"\nDECISIVE: in-process interleaved, {args.blocks} x 2 blocks of {args.block_runs} runs, "
          f"median of {args.reps} repetitions (ratio = median of per-process ratios)")
    print("model          representation  bridge p50 ms  independent p50 ms  ratio  (per repetition)")
    for r in rows:
        per = " ".join(f"{x:.3f}" for x in r.get("ratios", []))
        ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "n/a"
        print(f"{r['model']:<14} {r['representation']:<15} {ms(r.get('bridge_p50_ms')):>13} "
              f"{ms(r.get('independent_p50_ms')):>19}  {ratio}  ({per}){'' if r['met'] else '  MISSED ' + str(r.get('error', ''))}")
    print(f"\nINFORMATION ONLY: cross-process (verify {args.runs} runs vs a fresh independent process), "
          "subject to per-process variance")
    print("model          representation  verify p50 ms  independent p50 ms  ratio")
    for r in rows:
        c = r.get("cross_process")
        if c:
            print(f"{r['model']:<14} {r['representation']:<15} {ms(c['verify_p50_ms']):>13} "
                  f"{ms(c['independent_p50_ms']):>19}  {c['ratio']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if not results["met"]:
        print(f"\nMISSED: some in-process p50 ratio is outside +/-{TOLERANCE:.0%} or a representation could not be timed")
    return 0 if results["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
