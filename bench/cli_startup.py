"""Start-up cost of the bridge CLI: ``python -m bridge --help`` and ``python -m bridge formats``
against ``python -c pass``, median of N whole-process runs each (interleaved).

Requirement: bridge's overhead over the bare interpreter well under 0.5 s. Exits 1 when missed.

    .venv/bin/python bench/cli_startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import PYTHON, ROOT, machine, median, timed_run, versions  # noqa: E402

LIMIT_S = 0.5
COMMANDS = {
    "python -c pass": [PYTHON, "-c", "pass"],
    "python -m bridge --help": [PYTHON, "-m", "bridge", "--help"],
    "python -m bridge formats": [PYTHON, "-m", "bridge", "formats"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path, help="Write the results here as JSON.")
    args = parser.parse_args()
    for cmd in COMMANDS.values():  # one untimed run each: page cache and .pyc files warm
        timed_run(cmd, cwd=ROOT)
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, cmd in COMMANDS.items():
            samples[name].append(timed_run(cmd, cwd=ROOT)[0])
    base = median(samples["python -c pass"])
    rows = []
    for name, values in samples.items():
        med = median(values)
        rows.append({"command": name, "median_s": med, "overhead_s": med - base, "ratio_to_baseline": med / base,
                     "met": name == "python -c pass" or med - base < LIMIT_S, "all_s": values})
    results = {"machine": machine(), "versions": versions(), "runs": args.runs, "limit_overhead_s": LIMIT_S,
               "rows": rows, "met": all(r["met"] for r in rows)}
    print(json.dumps(results, indent=2))
    print("\ncommand                    median s  overhead s  ratio")
    for r in rows:
        print(f"{r['command']:<26} {r['median_s']:8.3f}  {r['overhead_s']:10.3f}  {r['ratio_to_baseline']:5.1f}"
              f"{'' if r['met'] else '  MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0 if results["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
