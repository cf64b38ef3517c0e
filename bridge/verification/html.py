"""The verification report as one self-contained HTML page: tables, and charts drawn by bridge as inline SVG.

No script, no stylesheet or font from the network: the page is read the same offline, in a CI
artifact viewer, or from an e-mail. Every figure in it comes from the `Report` (and, where the
manifest beside it can be read, the candidates each hop tried); the tables carry the numbers, the
charts show their shape:

- the route, each hop coloured by its verdict on the CPU (green passed, red failed, grey not compared);
- per hop and output: max abs drift against its tolerance on a log scale, and the errors' histogram
  by decade (`compare.HISTOGRAM_EDGES`);
- cumulative drift along the chain;
- latency per representation and device: the median, with a whisker from p90 to p99.

``bridge verify --html FILE`` writes it; ``bridge report REPORT.json --html FILE`` renders a saved report.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from bridge.verification.compare import HISTOGRAM_EDGES

PASS_COLOUR, FAIL_COLOUR, NONE_COLOUR = "#1a7f37", "#cf222e", "#8c959f"
LOG_MIN, LOG_MAX = -10, 1
"""The drift axis, in decades."""

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#1f2328;max-width:1200px}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em} th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left}
th{background:#f6f8fa} td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#1a7f37;font-weight:600} .fail{color:#cf222e;font-weight:600} .muted{color:#656d76}
.verdict{font-size:1.3em;padding:.3em .8em;border-radius:6px;display:inline-block;color:#fff}
svg text{font-family:inherit;font-size:11px}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, digits: str = ".3g") -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, digits)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            css = ' class="num"' if i in numeric else (' class="fail"' if str(cell).startswith(("FAIL", "ERROR")) else
                                                         ' class="pass"' if cell == "pass" else "")
            cells.append(f"<td{css}>{_e(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _log_x(value: float, left: float, width: float) -> float:
    decade = math.log10(value) if value > 0 else LOG_MIN
    return left + width * (min(max(decade, LOG_MIN), LOG_MAX) - LOG_MIN) / (LOG_MAX - LOG_MIN)


def _axis(left: float, width: float, y: float) -> str:
    ticks = []
    for decade in range(LOG_MIN, LOG_MAX + 1):
        x = left + width * (decade - LOG_MIN) / (LOG_MAX - LOG_MIN)
        ticks.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}" stroke="#8c959f"/>'
                     f'<text x="{x:.1f}" y="{y + 15}" text-anchor="middle">1e{decade}</text>')
    return f'<line x1="{left}" y1="{y}" x2="{left + width}" y2="{y}" stroke="#8c959f"/>' + "".join(ticks)


def route_svg(report: Any) -> str:
    """The representations as boxes by depth, each hop an arrow coloured by its CPU verdict."""
    hops = [c for c in report.hops if c.device == "cpu"] or list(report.hops)
    names: list[str] = []
    parent: dict[str, str] = {}
    for hop in hops:
        for name in (hop.src, hop.dst):
            if name not in names:
                names.append(name)
        parent.setdefault(hop.dst, hop.src)
    if not names:
        names = list(dict.fromkeys(r.name for r in report.representations))

    def depth(name: str, seen: frozenset[str] = frozenset()) -> int:
        return 0 if name not in parent or name in seen else 1 + depth(parent[name], seen | {name})

    columns: dict[int, list[str]] = {}
    for name in names:
        columns.setdefault(depth(name), []).append(name)
    box_w, box_h, gap_x, gap_y = 150, 34, 70, 16
    where = {name: (20 + d * (box_w + gap_x), 20 + i * (box_h + gap_y)) for d, col in columns.items() for i, name in enumerate(col)}
    width = 40 + (max(columns, default=0) + 1) * (box_w + gap_x)
    height = 40 + max((len(c) for c in columns.values()), default=1) * (box_h + gap_y)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="route">',
             '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto">'
             '<path d="M0,0 L8,4 L0,8 z" fill="#57606a"/></marker></defs>']
    for hop in hops:
        if hop.src not in where or hop.dst not in where:
            continue
        (x1, y1), (x2, y2) = where[hop.src], where[hop.dst]
        colour = PASS_COLOUR if hop.passed else FAIL_COLOUR
        parts.append(f'<line x1="{x1 + box_w}" y1="{y1 + box_h / 2}" x2="{x2 - 2}" y2="{y2 + box_h / 2}" stroke="{colour}" '
                     f'stroke-width="3" marker-end="url(#arrow)"><title>{_e(hop.src)} -&gt; {_e(hop.dst)}: '
                     f'{"pass" if hop.passed else "FAIL"}</title></line>')
    formats = {r.name: r.format for r in report.representations}
    for name, (x, y) in where.items():
        incoming = next((h for h in hops if h.dst == name), None)
        colour = NONE_COLOUR if incoming is None else PASS_COLOUR if incoming.passed else FAIL_COLOUR
        parts.append(f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6" fill="#fff" stroke="{colour}" '
                     f'stroke-width="2"/><text x="{x + box_w / 2}" y="{y + 14}" text-anchor="middle" font-weight="600">'
                     f'{_e(name)}</text><text x="{x + box_w / 2}" y="{y + 27}" text-anchor="middle" class="muted">'
                     f'{_e(formats.get(name, ""))}</text>')
    return "".join(parts) + "</svg>"


def drift_svg(comparisons: Sequence[Any]) -> str:
    """One bar per comparison and output: max abs on a log axis, a tick at its absolute tolerance."""
    rows = [(c, o) for c in comparisons for o in c.outputs if o.error is None]
    if not rows:
        return '<p class="muted">No comparison to draw.</p>'
    label_w, bar_w, row_h = 300, 520, 20
    height = 30 + row_h * len(rows) + 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 120}" height="{height}" role="img" '
             'aria-label="drift against tolerance">']
    for i, (comparison, output) in enumerate(rows):
        y = 10 + i * row_h
        colour = PASS_COLOUR if output.passed else FAIL_COLOUR
        x_end = _log_x(output.max_abs, label_w, bar_w)
        parts.append(f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{_e(comparison.src)} -&gt; '
                     f'{_e(comparison.dst)} [{_e(comparison.device)}] {_e(output.name)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{max(x_end - label_w, 1):.1f}" height="{row_h - 6}" '
                     f'fill="{colour}"><title>max abs {_num(output.max_abs)}</title></rect>'
                     f'<text x="{label_w + bar_w + 6}" y="{y + 13}">{_num(output.max_abs)}</text>')
        if not output.tolerance.quantized and output.tolerance.atol > 0:
            x_tol = _log_x(output.tolerance.atol, label_w, bar_w)
            parts.append(f'<line x1="{x_tol:.1f}" y1="{y}" x2="{x_tol:.1f}" y2="{y + row_h}" stroke="#1f2328" '
                         f'stroke-width="2"><title>atol {output.tolerance.atol:g}</title></line>')
    parts.append(_axis(label_w, bar_w, 12 + row_h * len(rows)))
    return "".join(parts) + "</svg>"


def histogram_svg(output: Any) -> str:
    """The output's absolute errors by decade, as bars (height: share of elements, log-free)."""
    counts = list(output.histogram)
    if not counts or not sum(counts):
        return ""
    labels = ["0"] + [f"1e{round(math.log10(edge))}" for edge in HISTOGRAM_EDGES]
    bar, height = 34, 60
    total, peak = sum(counts), max(counts)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{bar * len(counts) + 10}" height="{height + 30}" role="img" '
             f'aria-label="error histogram of {_e(output.name)}">']
    for i, count in enumerate(counts):
        h = height * count / peak if peak else 0
        parts.append(f'<rect x="{5 + i * bar}" y="{5 + height - h:.1f}" width="{bar - 4}" height="{h:.1f}" fill="#0969da">'
                     f'<title>[{labels[i]}, {labels[i + 1] if i + 1 < len(labels) else "inf"}): {count} of {total}</title></rect>'
                     f'<text x="{5 + i * bar + (bar - 4) / 2}" y="{height + 20}" text-anchor="middle" font-size="9">'
                     f'{labels[i]}</text>')
    return "".join(parts) + "</svg>"


def latency_svg(representations: Sequence[Any]) -> str:
    """Median latency per representation and device on a log axis, with a whisker from p90 to p99."""
    rows = [r for r in representations if r.latency is not None and r.latency.p50 > 0]
    if not rows:
        return '<p class="muted">No latency measured.</p>'
    label_w, bar_w, row_h = 220, 520, 20
    low = math.floor(math.log10(min(r.latency.p50 for r in rows)))
    high = math.ceil(math.log10(max(r.latency.p99 for r in rows) * 1.01))
    high = max(high, low + 1)

    def x_of(ms: float) -> float:
        return label_w + bar_w * (math.log10(max(ms, 10.0 ** low)) - low) / (high - low)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 140}" height="{40 + row_h * len(rows)}" '
             'role="img" aria-label="latency">']
    for i, rep in enumerate(rows):
        y = 10 + i * row_h
        lat = rep.latency
        parts.append(f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{_e(rep.name)} [{_e(rep.device)}]</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{max(x_of(lat.p50) - label_w, 1):.1f}" height="{row_h - 6}" '
                     f'fill="#8250df"><title>p50 {lat.p50:.4g} ms</title></rect>'
                     f'<line x1="{x_of(lat.p90):.1f}" y1="{y + row_h / 2}" x2="{x_of(lat.p99):.1f}" y2="{y + row_h / 2}" '
                     f'stroke="#1f2328" stroke-width="2"><title>p90 {lat.p90:.4g} ms, p99 {lat.p99:.4g} ms</title></line>'
                     f'<text x="{label_w + bar_w + 6}" y="{y + 13}">{lat.p50:.4g} ms</text>')
    for decade in range(low, high + 1):
        x = x_of(10.0 ** decade)
        parts.append(f'<text x="{x:.1f}" y="{25 + row_h * len(rows)}" text-anchor="middle">1e{decade} ms</text>')
    return "".join(parts) + "</svg>"


def cumulative_svg(report: Any) -> str:
    """Cumulative drift (worst output) of each artifact against the source, in chain order, on the CPU."""
    points: list[tuple[str, float, bool]] = []
    for c in report.cumulative:
        values = [o.max_abs for o in c.outputs if o.error is None and math.isfinite(o.max_abs)]
        if c.device == "cpu" and values:
            points.append((c.dst, max(values), c.passed))
    if not points:
        return ""
    left, width, step = 60, 520, 120
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + step * len(points) + 60}" height="{width // 2 + 60}" '
             'role="img" aria-label="cumulative drift">']
    scale = width // 2

    def y_of(value: float) -> float:
        decade = math.log10(value) if value > 0 else LOG_MIN
        return 10 + scale * (LOG_MAX - min(max(decade, LOG_MIN), LOG_MAX)) / (LOG_MAX - LOG_MIN)

    for decade in range(LOG_MIN, LOG_MAX + 1, 2):
        parts.append(f'<text x="{left - 6}" y="{y_of(10.0 ** decade) + 4:.1f}" text-anchor="end">1e{decade}</text>'
                     f'<line x1="{left}" y1="{y_of(10.0 ** decade):.1f}" x2="{left + step * len(points)}" '
                     f'y2="{y_of(10.0 ** decade):.1f}" stroke="#eaeef2"/>')
    for i, (name, value, passed) in enumerate(points):
        x = left + step * i + step / 2
        parts.append(f'<circle cx="{x:.1f}" cy="{y_of(value):.1f}" r="5" fill="{PASS_COLOUR if passed else FAIL_COLOUR}">'
                     f'<title>{_e(name)}: {value:.3g}</title></circle>'
                     f'<text x="{x:.1f}" y="{scale + 35}" text-anchor="middle">{_e(name)}</text>')
    return "".join(parts) + "</svg>"


def render(report: Any, manifest: Any = None) -> str:
    """The whole page. `manifest` (a `bridge.manifest.Manifest`, optional) adds tool versions and hop attempts."""
    from bridge.verification.report import QUANTIZED_HEADERS, TABLE_HEADERS, quantized_rows, table_rows

    verdict = "passed" if report.passed else "FAILED"
    colour = PASS_COLOUR if report.passed else FAIL_COLOUR
    inputs = report.inputs
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>bridge verify: {verdict}</title><style>{STYLE}</style></head><body>",
           f'<h1>bridge verify <span class="verdict" id="verdict" style="background:{colour}">{verdict}</span></h1>',
           f'<p>Exit code <b id="exit-code">{report.exit_code}</b>; bridge {_e(report.bridge_version)}; manifest '
           f"<code>{_e(report.manifest)}</code>.</p>",
           f"<p>Inputs: {inputs.samples} samples, sha256 <code>{_e(inputs.sha256)}</code>, "
           + (f"generated with seed {inputs.seed}" if inputs.generated else f"from <code>{_e(inputs.path)}</code>")
           + ".</p>"]
    if not report.passed:
        out.append("<h2>Problems</h2><ul>" + "".join(f"<li>{_e(line)}</li>" for line in report.summary().splitlines()) + "</ul>")
    out += ["<h2>Route</h2>", route_svg(report),
            "<h2>Representations</h2>", _table(TABLE_HEADERS, table_rows(report), numeric=(3, 4, 6, 7))]
    quantized = quantized_rows(report)
    if quantized:
        out += ["<h2>Quantized artifacts against their float parent</h2>", _table(QUANTIZED_HEADERS, quantized)]
    out += ["<h2>Drift per hop and output, against tolerance</h2>",
            '<p class="muted">Bars: max abs difference (log scale); black tick: the absolute tolerance.</p>',
            drift_svg(report.hops)]
    rows = []
    for comparison in (*report.hops, *report.cumulative, *report.devices):
        for o in comparison.outputs:
            rows.append([comparison.kind, f"{comparison.src} -> {comparison.dst}", comparison.device, o.name,
                         _num(o.max_abs), _num(o.mean_abs), _num(o.max_rel), _num(o.cosine, ".6f"),
                         _num(o.sqnr_db, ".1f"), "pass" if o.passed else "FAIL", o.tolerance.source])
    out.append(_table(("kind", "comparison", "device", "output", "max abs", "mean abs", "max rel", "cosine", "SQNR dB",
                       "result", "tolerance"), rows, numeric=(4, 5, 6, 7, 8)))
    out.append("<h2>Errors by decade</h2>")
    if not any(o.histogram for c in report.hops for o in c.outputs):
        out.append('<p class="muted">Not in this report (written before bridge counted errors by decade).</p>')
    for comparison in report.hops:
        for o in comparison.outputs:
            chart = histogram_svg(o)
            if chart:
                out.append(f"<h3>{_e(comparison.src)} -&gt; {_e(comparison.dst)} [{_e(comparison.device)}] "
                           f"{_e(o.name)}</h3>{chart}")
    cumulative = cumulative_svg(report)
    if cumulative:
        out += ["<h2>Cumulative drift along the chain (CPU, worst output)</h2>", cumulative]
    out += ["<h2>Latency</h2>", '<p class="muted">Median (bar) and p90 to p99 (whisker), log scale.</p>',
            latency_svg(report.representations)]
    if report.quantization_layers:
        out.append("<h2>Operations that lose the most to quantization</h2>")
        for found in report.quantization_layers:
            out.append(f"<h3>{_e(found.hop)}</h3>" + (_table(
                ("op", "node", "fused with", "SQNR dB", "loses dB", "max abs"),
                [[layer.op, layer.node, ", ".join(layer.fused), f"{layer.sqnr_db:.1f}", f"{layer.lost_db:.1f}",
                  _num(layer.max_abs)] for layer in found.layers], numeric=(3, 4, 5))
                if found.layers else f'<p class="muted">{_e(found.reason)}</p>'))
    if report.localization:
        out.append("<h2>Where it diverges</h2>")
        for found in report.localization:
            out.append(f"<h3>{_e(found.hop)}: {_e(found.status)}</h3><p>{_e(found.summary())}</p>")
            if found.top:
                out.append(_table(("op", "node", "target", "max abs", "x tolerance"),
                                  [[op.op, op.node, op.target, _num(op.max_abs), _num(op.over)] for op in found.top],
                                  numeric=(3, 4)))
    if manifest is not None:
        attempts = [[a.key, a.hop, t.candidate, t.outcome, t.message] for a in manifest.artifacts for t in a.attempts]
        if attempts:
            out += ["<h2>Candidates each hop tried</h2>", _table(("artifact", "hop", "candidate", "outcome", "message"), attempts)]
        out += ["<h2>Tool versions</h2>", _table(("tool", "version"), sorted(manifest.tool_versions.items()))]
    if report.notes:
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in report.notes) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
