"""A re-convert of an unchanged resnet18 through the conversion cache, beside the convert that filled it.

Side by side in one run: `bridge convert resnet18.pt2 --to tflite` with an empty cache of its own
(the hops run and the entry is stored), then the same command ROUNDS times (each a cache hit: the
entry checked by sha256 and copied into a new output folder), then once with ``--no-cache``.
Whole-process wall times (Python start and imports included), as a user sees them. The issue's
target: a hit under 1 second.

    .venv/bin/python bench/cache_lookup.py [--rounds 5] [--out bench/results/cache_lookup.json]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cache_lookup.json")
    args = parser.parse_args()
    from bridge.zoo import export

    with tempfile.TemporaryDirectory(prefix="bridge-bench-cache-") as tmp:
        work = Path(tmp)
        pt2 = export("resnet18", work, force=True).model_path
        env = {k: v for k, v in os.environ.items() if k != "BRIDGE_NO_CACHE"}  # _util turns it off for the others
        env["BRIDGE_CACHE_DIR"] = str(work / "cache")

        def convert(name: str, *flags: str) -> float:
            seconds, _ = timed_run([PYTHON, "-m", "bridge", "convert", str(pt2), "--to", "tflite", "-o",
                                    str(work / name), "--force", "--quiet", *flags], env=env, cwd=ROOT)
            return seconds

        cold = convert("cold.bridge")
        print(f"cold (hops run, entry stored) {cold:7.2f} s", flush=True)
        hits = []
        for i in range(args.rounds):
            hits.append(convert(f"hit{i}.bridge"))
            manifest = json.loads((work / f"hit{i}.bridge" / "manifest.json").read_text())
            assert manifest == json.loads((work / "cold.bridge" / "manifest.json").read_text()), "a hit differs"
            print(f"hit {i + 1}                          {hits[-1]:7.2f} s", flush=True)
        uncached = convert("nocache.bridge", "--no-cache")
        print(f"--no-cache                     {uncached:7.2f} s", flush=True)
        entry_bytes = sum(f.stat().st_size for f in (work / "cache").rglob("*") if f.is_file())
        hit_med = median(hits)
        result = {
            "model": "resnet18", "target": "tflite", "rounds": args.rounds, "machine": machine(), "versions": versions(),
            "cold_s": cold, "hit_s": hits, "no_cache_s": uncached, "hit_median_s": hit_med,
            "hit_over_no_cache": hit_med / uncached, "entry_bytes": entry_bytes,
        }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"hit median {hit_med:.2f} s, {hit_med / uncached:.3f}x of --no-cache ({uncached:.1f} s); "
          f"entry {entry_bytes / 1e6:.0f} MB; written to {args.out}")


if __name__ == "__main__":
    main()
