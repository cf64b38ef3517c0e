"""bridge convert resnet18.pt2 --to tflite, checked and --no-check, vs the hand-written torch.onnx + onnx2tf chain.

The three are timed as whole processes (Python start and imports included), rotating the order,
N rounds. Targets: median(checked) / median(hand-written) <= 0.8 (issue 14), and median(checked) /
median(--no-check) <= 1.15 (checking every artifact as it is made must stay cheap). A profile follows:
the per-hop seconds from OUT/manifest.json, the phases of the hand-written script, and the cost
of the pieces bridge repeats in its child processes (interpreter start, ``import torch``,
``torch.export.load``) and of the parent's own work before the first hop (``bridge.pt2``
signature read, source hash). Exits 1 when the target is missed.

    .venv/bin/python bench/convert_vs_handwritten.py [--rounds 3] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import PYTHON, ROOT, machine, median, timed_run, versions  # noqa: E402

TARGET = 0.8
"""Issue 14: a checked convert at most 0.8x the wall time of the hand-written chain."""

HANDWRITTEN = textwrap.dedent('''
    import json, sys, time
    t0 = time.perf_counter()
    import torch
    t1 = time.perf_counter()
    ep = torch.export.load(sys.argv[1])
    t2 = time.perf_counter()
    torch.onnx.export(ep, (), dynamo=True).save(sys.argv[2])
    t3 = time.perf_counter()
    import onnx2tf
    t4 = time.perf_counter()
    onnx2tf.convert(input_onnx_file_path=sys.argv[2], output_folder_path=sys.argv[3],
                    tflite_backend="flatbuffer_direct", copy_onnx_input_output_names_to_tflite=True,
                    non_verbose=True)
    t5 = time.perf_counter()
    print("PHASES " + json.dumps({"import torch": t1 - t0, "torch.export.load": t2 - t1,
                                  "torch.onnx.export+save": t3 - t2, "import onnx2tf": t4 - t3,
                                  "onnx2tf.convert": t5 - t4}))
''')

# The parent's own work before the first hop, timed in-process: reading the .pt2 signature from
# the archive's JSON (bridge/pt2.py; None would mean bridge falls back to the inspect child) and
# hashing the source file (sha256 for the manifest).
PARENT_PROBE = textwrap.dedent('''
    import json, sys, time
    from pathlib import Path
    t0 = time.perf_counter()
    from bridge import pt2
    from bridge.manifest import sha256_of
    t1 = time.perf_counter()
    sig = pt2.read_signature(Path(sys.argv[1]))
    t2 = time.perf_counter()
    sha256_of(Path(sys.argv[1]))
    t3 = time.perf_counter()
    print("PARENT " + json.dumps({"import bridge.pt2+manifest": t1 - t0, "pt2.read_signature": t2 - t1,
                                  "read_signature_found": sig is not None, "sha256 source": t3 - t2}))
''')


def _phases(stdout: str, marker: str) -> object:
    line = next(text for text in stdout.splitlines() if text.startswith(marker + " "))
    return json.loads(line[len(marker) + 1:])


def _piece(cmd: list[str], n: int) -> float | None:
    """Median whole-process seconds of `cmd`, or None when it fails (the profile is best effort)."""
    times = []
    for _ in range(n):
        seconds, proc = timed_run(cmd, cwd=ROOT, check=False)
        if proc.returncode != 0:
            return None
        times.append(seconds)
    return median(times)


HANDWRITTEN_ALL = textwrap.dedent('''
    import sys
    import torch
    torch.onnx.export(torch.export.load(sys.argv[1]), (), dynamo=True).save(sys.argv[2])
    import onnx2tf
    # One onnx2tf call writes the TFLite file and, asked, the SavedModel beside it.
    onnx2tf.convert(input_onnx_file_path=sys.argv[2], output_folder_path=sys.argv[3],
                    tflite_backend="flatbuffer_direct", flatbuffer_direct_output_saved_model=True,
                    copy_onnx_input_output_names_to_tflite=True, non_verbose=True)
''')


def run_all(rounds: int, work: Path) -> dict[str, object]:
    """`convert --to all` (onnx, tf, tflite; checked) against the hand-written chain to the same three formats."""
    from bridge.zoo.export import export

    pt2 = export("resnet18", work, force=True).model_path
    script = work / "handwritten_all.py"
    script.write_text(HANDWRITTEN_ALL, encoding="utf-8")
    times: dict[str, list[float]] = {"bridge": [], "hand": []}
    for i in range(rounds):
        for side in (("bridge", "hand") if i % 2 == 0 else ("hand", "bridge")):
            if side == "bridge":
                out = work / "all_out"
                seconds, _ = timed_run([PYTHON, "-m", "bridge", "convert", str(pt2), "--to", "all", "-o", str(out),
                                        "--force", "--quiet"], cwd=ROOT)
                manifest = json.loads((out / "manifest.json").read_text())
                assert {a["format"] for a in manifest["artifacts"]} >= {"onnx", "tf", "tflite"}
                assert all(a["check"] and a["check"]["passed"] for a in manifest["artifacts"]), "an artifact did not verify"
            else:
                hw = work / "hand_all"
                shutil.rmtree(hw, ignore_errors=True)
                hw.mkdir()
                seconds, _ = timed_run([PYTHON, str(script), str(pt2), str(hw / "model.onnx"), str(hw / "tf")], cwd=work)
            times[side].append(seconds)
            print(f"round {i + 1} {side:<9} {seconds:7.2f} s", flush=True)
    medians = {side: median(values) for side, values in times.items()}
    return {"model": "resnet18", "to": "all (onnx, tf, tflite)", "rounds": rounds, "machine": machine(),
            "versions": versions(), "seconds": times, "median_s": medians,
            "ratio": medians["bridge"] / medians["hand"]}


def run(rounds: int, work: Path) -> dict[str, object]:
    from bridge.zoo.export import export

    result = export("resnet18", work, force=True)
    pt2 = result.model_path
    script = work / "handwritten.py"
    script.write_text(HANDWRITTEN, encoding="utf-8")
    bridge_s: list[float] = []
    unchecked_s: list[float] = []
    hand_s: list[float] = []
    hops: list[dict[str, float]] = []
    hand_phases: list[dict[str, float]] = []
    sides = ("bridge", "unchecked", "hand")
    for i in range(rounds):
        # Rotate which goes first so drift in the machine's state does not favour one side.
        order = sides[i % 3:] + sides[:i % 3]
        for side in order:
            if side in ("bridge", "unchecked"):
                out = work / f"{side}_out"
                flags = ["--no-check"] if side == "unchecked" else []
                seconds, _ = timed_run([PYTHON, "-m", "bridge", "convert", str(pt2), "--to", "tflite",
                                        "-o", str(out), "--force", "--quiet", *flags], cwd=ROOT)
                manifest = json.loads((out / "manifest.json").read_text())
                if side == "bridge":
                    assert all(a["check"] and a["check"]["passed"] for a in manifest["artifacts"]), "an artifact did not verify"
                    hops.append({a["hop"]: a["seconds"] for a in manifest["artifacts"]})
                    bridge_s.append(seconds)
                else:
                    unchecked_s.append(seconds)
            else:
                hw = work / "hand_out"
                shutil.rmtree(hw, ignore_errors=True)
                hw.mkdir()
                seconds, proc = timed_run([PYTHON, str(script), str(pt2), str(hw / "model.onnx"), str(hw / "tflite")], cwd=work)
                hand_phases.append(_phases(proc.stdout, "PHASES"))  # type: ignore[arg-type]
                hand_s.append(seconds)
            print(f"round {i + 1} {side:<9} {seconds:7.2f} s", flush=True)
    bridge_med, hand_med, unchecked_med = median(bridge_s), median(hand_s), median(unchecked_s)
    ratio = bridge_med / hand_med
    check_ratio = bridge_med / unchecked_med
    hop_medians = {name: median([h[name] for h in hops]) for name in hops[0]}
    phase_medians = {name: median([p[name] for p in hand_phases]) for name in hand_phases[0]}
    # The pieces bridge pays again in each child process, measured alone.
    pieces = {
        "python -c pass": _piece([PYTHON, "-c", "pass"], 3),
        "python -m bridge --help": _piece([PYTHON, "-m", "bridge", "--help"], 3),
        "python -c 'import torch'": _piece([PYTHON, "-c", "import torch"], 2),
        "python -c 'import torch; torch.export.load(pt2)'": _piece(
            [PYTHON, "-c", f"import torch; torch.export.load({str(pt2)!r})"], 2),
        "python -c 'import onnx2tf'": _piece([PYTHON, "-c", "import onnx2tf"], 2),
    }
    probe = work / "parent_probe.py"
    probe.write_text(PARENT_PROBE, encoding="utf-8")
    seconds, proc = timed_run([PYTHON, str(probe), str(pt2)], cwd=ROOT, check=False)
    parent = _phases(proc.stdout, "PARENT") if proc.returncode == 0 else None
    unaccounted = bridge_med - sum(hop_medians.values())
    return {
        "model": "resnet18", "rounds": rounds, "machine": machine(), "versions": versions(),
        "bridge_s": bridge_s, "unchecked_s": unchecked_s, "handwritten_s": hand_s,
        "bridge_median_s": bridge_med, "unchecked_median_s": unchecked_med, "handwritten_median_s": hand_med,
        "ratio": ratio, "checked_over_unchecked": check_ratio,
        "target": f"ratio <= {TARGET} and checked_over_unchecked <= 1.15", "met": ratio <= TARGET and check_ratio <= 1.15,
        "bridge_hop_seconds_median": hop_medians,
        "bridge_outside_hops_s": unaccounted,
        "handwritten_phases_median": phase_medians,
        "pieces_s": pieces,
        "parent_probe_s": parent,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="Write the results here as JSON.")
    parser.add_argument("--to-all", action="store_true",
                        help="Instead: `convert --to all` against the hand-written chain to onnx, tf and tflite "
                             "(for information: no target)")
    args = parser.parse_args()
    if args.to_all:
        with tempfile.TemporaryDirectory(prefix="bench-convert-all-") as tmp:
            results_all = run_all(args.rounds, Path(tmp))
        print(json.dumps(results_all, indent=2))
        if args.json:
            args.json.write_text(json.dumps(results_all, indent=2) + "\n", encoding="utf-8")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
        results = run(args.rounds, Path(tmp))
    print(json.dumps(results, indent=2))
    print(f"\nbridge (checked) median {results['bridge_median_s']:.2f} s, --no-check median "
          f"{results['unchecked_median_s']:.2f} s, hand-written median {results['handwritten_median_s']:.2f} s; "
          f"checked/hand {results['ratio']:.3f}, checked/unchecked {results['checked_over_unchecked']:.3f} "
          f"({'met' if results['met'] else 'MISSED'}: targets <= {TARGET} and <= 1.15)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0 if results["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
