"""Peak memory of `bridge explain` against a plain `bridge verify` of the same sample (issue 10).

    .venv/bin/python bench/localize_memory.py [--model resnet18] [--dir DIR] [--rounds 2] [--json F]

Converts the zoo model to every format once (or uses DIR, a `bridge convert` output), then runs,
alternating, round after round:

- verify:  ``bridge verify DIR --device cpu --samples 1 --latency-runs 1 --atol 0 --rtol 0``
- explain: ``bridge explain DIR --samples 1 --atol 0 --rtol 0``

Zero tolerance makes every hop fail, so explain captures and walks every hop (source -> onnx,
onnx -> tflite, onnx -> tf for resnet18) where verify only runs. Each arm runs in a fresh wrapper
process that reports its own peak RSS (the bridge process: ``RUSAGE_SELF``) and that of the
largest process it waited for (``RUSAGE_CHILDREN``: bridge runs every step in its own child, one at
a time). An arm's peak is counted as the sum of the two, an upper bound of what was resident at
once. Requirement: median explain / verify <= 1.5. Exits 1 when it is missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 1.5
WRAPPER = r"""
import resource, runpy, sys
sys.argv = ["bridge", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("bridge", run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print("PEAK", own, children, code, file=sys.stderr)
"""


def peak(args: list[str]) -> dict[str, float]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", WRAPPER, *args], capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    line = next((x for x in result.stderr.splitlines() if x.startswith("PEAK ")), None)
    if line is None:
        raise SystemExit(f"{args[0]} did not report its peak:\n{result.stderr[-2000:]}")
    _, own, children, code = line.split()
    return {"own_mb": int(own) / 1024, "largest_child_mb": int(children) / 1024,
            "peak_mb": (int(own) + int(children)) / 1024, "exit": int(code), "seconds": round(seconds, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--dir", type=Path, help="an existing bridge convert output (default: convert the zoo model)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-localize-") as tmp:
        folder = args.dir
        if folder is None:
            exported = subprocess.run([sys.executable, "-m", "bridge", "zoo", "export", args.model, "-o", tmp, "-q"],
                                      capture_output=True, text=True, cwd=ROOT)
            if exported.returncode:
                raise SystemExit(exported.stderr)
            folder = Path(tmp, f"{args.model}.bridge")
            converted = subprocess.run([sys.executable, "-m", "bridge", "convert", str(Path(tmp, f"{args.model}.pt2")),
                                        "--to", "all", "-o", str(folder), "-q"], capture_output=True, text=True, cwd=ROOT)
            if converted.returncode:
                raise SystemExit(converted.stderr)
        zero = ["--samples", "1", "--atol", "0", "--rtol", "0"]
        arms = {"verify": ["verify", str(folder), "--device", "cpu", "--latency-runs", "1", *zero],
                "explain": ["explain", str(folder), *zero]}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in arms}
        for round_ in range(args.rounds):
            order = list(arms) if round_ % 2 == 0 else list(reversed(arms))
            for name in order:
                runs[name].append(peak(arms[name]))
                print(f"round {round_ + 1} {name}: {runs[name][-1]}", flush=True)
    verify_mb = statistics.median(r["peak_mb"] for r in runs["verify"])
    explain_mb = statistics.median(r["peak_mb"] for r in runs["explain"])
    ratio = explain_mb / verify_mb
    summary = {"model": args.model, "rounds": args.rounds, "verify_peak_mb": round(verify_mb, 1),
               "explain_peak_mb": round(explain_mb, 1), "ratio": round(ratio, 3), "limit": LIMIT, "runs": runs}
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    if any(r["exit"] not in (0, 1) for arm in runs.values() for r in arm):
        print("an arm ended with an error (exit 2 or 3)", file=sys.stderr)
        return 1
    return 0 if ratio <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
