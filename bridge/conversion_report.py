"""A conversion as a report: JSON (the manifest), JUnit XML (a test case per artifact's check) and Markdown.

`bridge convert --json/--junit/--markdown PATH|-` writes these, as `bridge verify` writes its own.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from bridge.manifest import Artifact, Manifest

if TYPE_CHECKING:
    from bridge.conversion import Conversion

KINDS = ("json", "junit", "markdown")


def render(conversion: Conversion, kind: str) -> str:
    """The conversion as ``json``, ``junit`` or ``markdown`` text."""
    manifest = conversion.manifest
    if kind == "json":
        return manifest.dumps()
    if kind == "junit":
        return _junit(manifest)
    if kind == "markdown":
        return _markdown(manifest)
    raise ValueError(f"unknown report kind {kind!r}: use one of {', '.join(KINDS)}")


def _check_text(artifact: Artifact) -> str:
    if artifact.check is None:
        return "not checked"
    worst = artifact.check.worst()
    figure = f"max abs {worst.max_abs:.2e}" if worst is not None and worst.max_abs is not None else "no figure"
    return f"{'verified' if artifact.check.passed else 'did not verify'}, {figure}"


def _junit(manifest: Manifest) -> str:
    suite = ET.Element("testsuite", name="bridge convert")
    for artifact in manifest.artifacts:
        case = ET.SubElement(suite, "testcase", classname="bridge.convert",
                             name=f"{artifact.hop} [{artifact.candidate}] -> {artifact.key}")
        if artifact.check is None:
            ET.SubElement(case, "skipped", message="not checked")
        elif not artifact.check.passed:
            message = "; ".join(a.message for a in artifact.attempts if a.outcome != "passed") or _check_text(artifact)
            ET.SubElement(case, "failure", message=message).text = message
    for failure in manifest.failures:
        if failure.kept is None and failure.resolved_by is None:
            case = ET.SubElement(suite, "testcase", classname="bridge.convert", name=f"{failure.hop}")
            ET.SubElement(case, "error", message=failure.error).text = failure.detail or failure.error
    suite.set("tests", str(len(suite)))
    suite.set("failures", str(len(suite.findall("testcase/failure"))))
    suite.set("errors", str(len(suite.findall("testcase/error"))))
    suite.set("skipped", str(len(suite.findall("testcase/skipped"))))
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def _markdown(manifest: Manifest) -> str:
    unresolved = [f for f in manifest.failures if f.resolved_by is None]
    status = "converted, every artifact verified" if not unresolved else "failures"
    lines = [f"### bridge convert: {status}", "", f"Route: {'; '.join(f'`{r}`' for r in manifest.route)}", "",
             "| artifact | hop | candidate | check | attempts |", "|---|---|---|---|---|"]
    for artifact in manifest.artifacts:
        tried = ", ".join(f"{a.candidate} ({a.outcome})" for a in artifact.attempts)
        lines.append(f"| {artifact.key} | {artifact.hop} | {artifact.candidate} | {_check_text(artifact)} | {tried} |")
    if manifest.failures:
        lines += ["", "**Failures**", ""]
        for failure in manifest.failures:
            resolved = f" (made instead by `{failure.resolved_by}`)" if failure.resolved_by else ""
            lines.append(f"- `{failure.hop}`: {failure.error.replace('|', '/')}{resolved}")
    return "\n".join(lines) + "\n"
