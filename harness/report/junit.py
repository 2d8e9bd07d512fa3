"""JUnit XML of a run's verdict, for CI systems: one test case per SLO check (failure: failed, skipped:
inconclusive or unclaimed), one `run validity` test case that errors when the run is invalid or cut, and
one `run decided` test case that errors when the verdict is inconclusive (exit 2: never a green build)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from harness.verdict.model import Results

SKIPPED = ("inconclusive", "not_observed")


def _value(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    return f"{v:.2%}" if unit == "fraction" else f"{v:g} {unit}"


def junit_xml(results: Results, suite: str = "edgeharness") -> str:
    """The JUnit XML document (testsuites > testsuite > testcase)."""
    v = results.verdict
    root = ET.Element("testsuites", name=suite)
    ts = ET.SubElement(root, "testsuite", name=f"{suite} {results.run.profile.get('name', '')}".strip())
    props = ET.SubElement(ts, "properties")
    for name, value in (
        ("verdict", v.status),
        ("exit_code", str(v.exit_code)),
        ("slo_file", v.slo_file),
        ("confidence", f"{v.validity_rules.confidence:g}"),
    ):
        ET.SubElement(props, "property", name=name, value=value)
    failures = errors = skipped = 0
    validity = ET.SubElement(ts, "testcase", classname=f"{suite}.run", name="run validity", time="0")
    problems = list(v.invalid_reasons)
    if results.run.interrupted:
        problems.insert(0, f"run interrupted ({results.run.interrupted})")
    if problems:
        errors += 1
        err = ET.SubElement(
            validity, "error", message=problems[0], type="invalid" if v.invalid_reasons else "interrupted"
        )
        err.text = "\n".join(problems)
    decided = ET.SubElement(ts, "testcase", classname=f"{suite}.run", name="run decided", time="0")
    if v.status == "inconclusive":
        # Skipped checks alone would leave a CI report green while the run exits 2.
        errors += 1
        why = v.inconclusive_reasons or ["inconclusive"]
        ET.SubElement(decided, "error", message=why[0], type="inconclusive").text = "\n".join(why)
    for ch in v.checks:
        tc = ET.SubElement(ts, "testcase", classname=f"{suite}.{ch.region}", name=ch.name, time="0")
        detail = (
            f"measured {_value(ch.measured, ch.unit)}"
            + (f", interval [{_value(ch.lo, ch.unit)}, {_value(ch.hi, ch.unit)}]" if ch.percentile else "")
            + f", threshold {_value(ch.threshold, ch.unit)}, {ch.samples} samples"
        )
        if ch.status == "fail":
            failures += 1
            ET.SubElement(tc, "failure", message=f"{ch.name}: {detail}", type="slo").text = ch.reason or detail
        elif ch.status in SKIPPED:
            skipped += 1
            ET.SubElement(tc, "skipped", message=ch.reason or f"{ch.status}: {detail}")
        elif ch.status != "pass":  # no_data: nothing measured, which makes the run invalid
            errors += 1
            ET.SubElement(tc, "error", message=ch.reason or ch.status, type=ch.status)
        ET.SubElement(tc, "system-out").text = detail
    ts.set("tests", str(len(v.checks) + 2))
    ts.set("failures", str(failures))
    ts.set("errors", str(errors))
    ts.set("skipped", str(skipped))
    ts.set("time", f"{max(0.0, results.run.finished_at - results.run.started_at):.3f}")
    for k in ("tests", "failures", "errors", "skipped", "time"):
        root.set(k, ts.get(k, ""))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(results: Results, path: str | Path) -> None:
    """Write the JUnit XML (a temporary file renamed into place)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(junit_xml(results), encoding="utf-8")
    tmp.replace(p)
