"""Peak memory over weight bytes, and wall time, per hop and for verify, at growing model sizes (issue 18).

For each size (GiB of float32 weights) the bench generates the plain model of issue 18 (blocks of
Linear(4096, 4096) + LayerNorm + GELU, saved with torch.export; never committed), then runs, one at
a time, ``bridge convert big.pt2 --to TARGET`` for each target and ``bridge verify`` of the result,
each as its own process. The peak is the largest resident memory of the whole process tree (the
bridge process and every child under it), sampled every 0.2 s by bridge.memory.tree_rss; each
hop's own peak is read from convert's progress lines (``done in X s (peak Y GB)``). A run that
convert refuses up front (bridge.memory's estimate) is recorded with its one line. Each verify
records the worst max abs drift of every artifact against the source (its ``--json`` report).
Last, per size, ``convert --to tflite --max-memory 1GB``: it must exit 2, in seconds, with one
line about memory and no output folder (issue 18's refusal). Every convert runs with
``--no-cache``: the generated models are the same from run to run (seeded), and a cache hit is
a copy, not a conversion. ``--targets ""`` runs the refusal alone.

    .venv/bin/python bench/memory_growth.py --sizes 0.5,2.25,4.5 --targets tflite,tf [--json F]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.memory import GB, tree_rss  # noqa: E402

WIDTH = 4096
BLOCK_BYTES = (WIDTH * WIDTH + WIDTH + 2 * WIDTH) * 4

MAKE = """
import sys, torch
blocks, width, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
layers = []
for _ in range(blocks):
    layers += [torch.nn.Linear(width, width), torch.nn.LayerNorm(width), torch.nn.GELU()]
torch.manual_seed(0)
model = torch.nn.Sequential(*layers).eval()
with torch.no_grad():
    torch.export.save(torch.export.export(model, (torch.randn(1, width),)), out)
"""


def measured(cmd: list[str]) -> tuple[int, float, int, str]:
    """Run `cmd`; (exit code, seconds, peak resident bytes of its whole tree, stderr)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    sampler.join()
    return proc.returncode, time.perf_counter() - started, peak[0], err


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.5", help="GiB of weights, comma-separated (default 0.5)")
    parser.add_argument("--targets", default="tflite,tf", help="comma-separated; empty: the refusal alone")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    python = sys.executable
    rows = []
    for size in (float(s) for s in args.sizes.split(",")):
        blocks = max(1, round(size * GB / BLOCK_BYTES))
        with tempfile.TemporaryDirectory(prefix="bridge-bench-big-") as tmp:
            model = Path(tmp, "big.pt2")
            subprocess.run([python, "-c", MAKE, str(blocks), str(WIDTH), str(model)], check=True)
            weights = blocks * BLOCK_BYTES
            for target in [t for t in args.targets.split(",") if t]:
                out = Path(tmp, f"big.{target}.bridge")
                code, seconds, peak, err = measured([python, "-m", "bridge", "convert", str(model), "--to", target, "-o", str(out),
                                                     "--no-cache"])
                hops = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\S+) \[\S+\]: done in [\d.]+ s \(peak ([\d.]+) GB\)",
                                                                         err, re.M)}
                rows.append({"gib": round(weights / GB, 2), "step": f"convert --to {target}", "exit": code,
                             "seconds": round(seconds, 1), "peak_gb": round(peak / GB, 2), "ratio": round(peak / weights, 2),
                             "hops_peak_gb": hops, "error": err.strip().splitlines()[-1] if code else ""})
                print(rows[-1], flush=True)
                if code == 0:
                    report = Path(tmp, f"verify.{target}.json")
                    code, seconds, peak, err = measured([python, "-m", "bridge", "verify", str(out), "--device", "cpu",
                                                         "--samples", "2", "--latency-runs", "1", "--json", str(report)])
                    drift = {}
                    if report.is_file():
                        found = json.loads(report.read_text())
                        drift = {h["dst"]: max(d["max_abs"] for d in h["outputs"]) for h in found["cumulative"]}
                    rows.append({"gib": round(weights / GB, 2), "step": f"verify ({target})", "exit": code,
                                 "seconds": round(seconds, 1), "peak_gb": round(peak / GB, 2), "ratio": round(peak / weights, 2),
                                 "max_abs_vs_source": drift, "error": err.strip().splitlines()[-1] if code else ""})
                    print(rows[-1], flush=True)
                    shutil.rmtree(out)  # the next target's run has the disk and the page cache to itself
            # Refused before any hop: one line, within seconds, nothing written.
            out = Path(tmp, "refused.bridge")
            code, seconds, peak, err = measured([python, "-m", "bridge", "convert", str(model), "--to", "tflite", "-o", str(out),
                                                 "--max-memory", "1GB", "--no-cache"])
            rows.append({"gib": round(weights / GB, 2), "step": "convert --to tflite --max-memory 1GB", "exit": code,
                         "seconds": round(seconds, 1), "peak_gb": round(peak / GB, 2), "ratio": round(peak / weights, 2),
                         "wrote": out.exists(), "error": err.strip()})
            print(rows[-1], flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    refusals_ok = all(r["exit"] == 2 and not r["wrote"] for r in rows if "max-memory" in r["step"])
    return 0 if refusals_ok and all(r["exit"] in (0, 2) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
