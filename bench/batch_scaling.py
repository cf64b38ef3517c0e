"""`bridge batch` on one plan three ways, side by side in one run: the pool with 1 job at a time, with 2, and Ray.

The plan: small zoo models (default mlp, two_io, conv1d, embedding, cnn, gru) to onnx and tflite,
verified on the CPU with 2 samples. The conversion cache is off (bench/_util.py) and each arm
writes a new output folder, so every arm converts and verifies everything. Per arm: whole-process
wall time, the sum and mean of the jobs' own seconds, and the peak resident memory of the largest
process any job started (``RUSAGE_CHILDREN``). From these: the pool's speed-up from 1 to 2 jobs,
Ray's overhead against the pool at the same width, and the throughput to expect on N workers.

    .venv/bin/python bench/batch_scaling.py [--models mlp,two_io | --zoo] [--out bench/results/batch_scaling.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import PYTHON, ROOT, machine, versions  # noqa: E402

ARMS = (("pool -j 1", ["-j", "1"]), ("pool -j 2", ["-j", "2"]), ("ray -j 2", ["--executor", "ray", "-j", "2"]))


def _arm(plan: list[str], out: Path, flags: list[str]) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run([PYTHON, "-m", "bridge", "batch", *plan, "-o", str(out), "--json", str(out) + ".json",
                           "--quiet", *flags], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    report = json.loads(Path(str(out) + ".json").read_text())
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(flags)}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    job_seconds = [job["seconds"] for job in report["jobs"]]
    return {"wall_s": wall, "job_s": job_seconds, "job_sum_s": sum(job_seconds),
            "job_mean_s": sum(job_seconds) / len(job_seconds),
            "peak_process_mb": peak_kb / 1024 if peak_kb > before else None,
            "verdicts": {job["name"]: job["status"] for job in report["jobs"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,two_io,conv1d,embedding,cnn,gru")
    parser.add_argument("--zoo", action="store_true",
                        help="`bridge batch --zoo` instead: every zoo model that is not slow to every target it reaches, "
                             "verify's defaults (--models is ignored)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "batch_scaling.json")
    args = parser.parse_args()
    from bridge.batch_plan import zoo_jobs
    from bridge.zoo import export

    names = [job.name for job in zoo_jobs()] if args.zoo else args.models.split(",")
    with tempfile.TemporaryDirectory(prefix="bridge-bench-batch-") as tmp:
        work = Path(tmp)
        if args.zoo:
            plan = ["--zoo"]
        else:
            models = work / "models"
            models.mkdir()
            for name in names:
                made = export(name, models, force=True)
                if made.model_path.parent != models:
                    shutil.move(made.model_path, models)
            plan_file = models / "plan.yaml"
            plan_file.write_text("targets: [onnx, tflite]\nverify: {samples: 2, devices: [cpu], latency_runs: 5}\nmodels:\n"
                                 + "".join(f"  - {n}.pt2\n" for n in names))
            plan = [str(plan_file)]
        arms = {}
        for label, flags in ARMS:
            arms[label] = _arm(plan, work / label.replace(" ", "_"), flags)
            print(f"{label:<10} wall {arms[label]['wall_s']:7.1f} s, jobs {arms[label]['job_sum_s']:7.1f} s "
                  f"(mean {arms[label]['job_mean_s']:.1f} s)", flush=True)
    verdicts = {label: arm["verdicts"] for label, arm in arms.items()}
    same = len({json.dumps(v, sort_keys=True) for v in verdicts.values()}) == 1
    one, two, ray = (arms[label] for label, _ in ARMS)
    speedup = one["wall_s"] / two["wall_s"]
    ray_overhead = ray["wall_s"] / two["wall_s"]
    per_job = one["job_mean_s"]  # a job alone on this machine, no other job beside it
    efficiency = speedup / 2
    expected = {str(n): round(n * 3600 / per_job * efficiency / ray_overhead) for n in (1, 2, 8, 32, 128)}
    result = {"plan": "--zoo" if args.zoo else "models to onnx and tflite", "models": names,
              "machine": machine(), "versions": versions(), "arms": arms, "same_verdicts": same,
              "pool_speedup_1_to_2": speedup, "ray_over_pool_2": ray_overhead, "per_job_s": per_job,
              "expected_jobs_per_hour_on_n_workers": expected}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"pool -j 2 vs -j 1: {speedup:.2f}x faster; Ray vs pool at 2: {ray_overhead:.2f}x the wall time; "
          f"same verdicts: {same}; a job alone {per_job:.1f} s; written to {args.out}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
