"""bridge verify of resnet18's onnx and tflite vs a hand-written single-process script doing the same runs.

Both sides run the source (torch.export program), the ONNX file (onnxruntime) and the TFLite file
(LiteRT) on the same number of samples, time 3 warm-up and 20 timed runs of each, and make the same
three comparisons (source -> onnx, onnx -> tflite, source -> tflite). The hand-written script is
what a new user writes: one process, the three runtimes imported in turn, NHWC transposes by hand.
bridge runs each representation in a child process of its own; side by side where cores and memory
allow (the default), and one at a time (``BRIDGE_PARALLEL_STEPS=1``) as a third arm. Whole-process
wall time, the order rotated each round. Target (issue 14): median(verify) / median(hand-written)
<= 1.0. Exits 1 when it is missed or a side fails.

    .venv/bin/python bench/verify_vs_handwritten.py [--rounds 5] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import PYTHON, ROOT, machine, median, timed_run, versions  # noqa: E402

SAMPLES = 8  # verify's default (bridge.defaults.SAMPLES), as are the warm-up and timed runs below
WARMUP, RUNS = 3, 20

HANDWRITTEN = textwrap.dedent('''
    import json, sys, time
    import numpy as np
    pt2, onnx_path, tflite_path, samples, warmup, runs = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
    x = np.random.default_rng(0).standard_normal((samples, 1, 3, 224, 224)).astype(np.float32)

    def timed(call, feed):
        for _ in range(warmup):
            call(feed)
        times = []
        for _ in range(runs):
            t = time.perf_counter_ns()
            call(feed)
            times.append(time.perf_counter_ns() - t)
        return float(np.percentile(times, 50)) / 1e6

    import torch
    module = torch.export.load(pt2).module()
    with torch.no_grad():
        torch_call = lambda feed: module(torch.from_numpy(feed)).numpy()
        source = [torch_call(s) for s in x]
        p50 = {"source": timed(torch_call, x[0])}

    import onnxruntime as ort
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    ort_call = lambda feed: session.run(None, {name: feed})[0]
    onnx_out = [ort_call(s) for s in x]
    p50["onnx"] = timed(ort_call, x[0])

    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=tflite_path)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    def tflite_call(feed):
        interpreter.set_tensor(inp, feed.transpose(0, 2, 3, 1))  # onnx2tf made the input NHWC
        interpreter.invoke()
        return interpreter.get_tensor(out)
    tflite_out = [tflite_call(s) for s in x]
    p50["tflite"] = timed(tflite_call, x[0])

    drift = {}
    for label, a, b in (("source->onnx", source, onnx_out), ("onnx->tflite", onnx_out, tflite_out),
                        ("source->tflite", source, tflite_out)):
        diff = max(float(np.max(np.abs(p - q))) for p, q in zip(a, b))
        drift[label] = (diff, all(np.allclose(q, p, atol=1e-4, rtol=1e-3) for p, q in zip(a, b)))
    print("HAND " + json.dumps({"p50_ms": p50, "drift": drift}))
''')


def run(rounds: int, work: Path) -> dict[str, object]:
    from bridge.zoo.export import export

    pt2 = export("resnet18", work, force=True).model_path
    converted = work / "resnet18.bridge"
    timed_run([PYTHON, "-m", "bridge", "convert", str(pt2), "--to", "onnx,tflite", "-o", str(converted),
               "--force", "--quiet"], cwd=ROOT)
    manifest = json.loads((converted / "manifest.json").read_text())
    paths = {a["format"]: converted / a["path"] for a in manifest["artifacts"]}
    script = work / "handwritten.py"
    script.write_text(HANDWRITTEN, encoding="utf-8")
    times: dict[str, list[float]] = {"bridge": [], "one_at_a_time": [], "hand": []}
    hand_result: object = None
    sides = tuple(times)
    for i in range(rounds):
        for side in sides[i % 3:] + sides[:i % 3]:  # rotated, so drift in the machine's state favours no side
            if side == "hand":
                seconds, proc = timed_run([PYTHON, str(script), str(pt2), str(paths["onnx"]), str(paths["tflite"]),
                                           str(SAMPLES), str(WARMUP), str(RUNS)], cwd=work)
                hand_result = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("HAND "))[5:])
            else:
                env = {**os.environ, **({"BRIDGE_PARALLEL_STEPS": "1"} if side == "one_at_a_time" else {})}
                report = work / f"{side}.json"
                seconds, _ = timed_run([PYTHON, "-m", "bridge", "verify", str(converted), "--device", "cpu",
                                        "--samples", str(SAMPLES), "--latency-runs", str(RUNS), "--json", str(report), "--quiet"],
                                       cwd=ROOT, env=env)
                passed = json.loads(report.read_text())["passed"]
                assert passed, f"bridge verify did not pass ({side})"
            times[side].append(seconds)
            print(f"round {i + 1} {side:<14} {seconds:7.2f} s", flush=True)
    medians = {side: median(values) for side, values in times.items()}
    ratio = medians["bridge"] / medians["hand"]
    return {
        "model": "resnet18", "representations": ["source (torch.export)", "onnx (onnxruntime)", "tflite (LiteRT)"],
        "samples": SAMPLES, "warmup": WARMUP, "runs": RUNS, "rounds": rounds,
        "machine": machine(), "versions": versions(), "seconds": times, "median_s": medians,
        "ratio": ratio, "one_at_a_time_over_hand": medians["one_at_a_time"] / medians["hand"],
        "target": "ratio <= 1.0", "met": ratio <= 1.0, "handwritten_last_round": hand_result,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="Write the results here as JSON.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        results = run(args.rounds, Path(tmp))
    print(json.dumps(results, indent=2))
    medians = results["median_s"]
    assert isinstance(medians, dict)
    print(f"\nverify median {medians['bridge']:.2f} s (one at a time {medians['one_at_a_time']:.2f} s), "
          f"hand-written median {medians['hand']:.2f} s; ratio {results['ratio']:.3f} "
          f"({'met' if results['met'] else 'MISSED'}: target <= 1.0)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0 if results["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
