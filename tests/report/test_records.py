"""docs/FORMATS.md documents the typed records the code writes: every JSON key of each record is named in
its bullet, and the report example's flag parses as a Finding. A field added to a record without its line in
the docs fails here."""
import json
import re
from pathlib import Path

import pytest

from analysis.report.records import CheckResult, Finding, NotJudged, Slice, TestResult, Verdict

DOC = (Path(__file__).resolve().parents[2] / "docs" / "FORMATS.md").read_text()

SAMPLES = {
    "TestResult": TestResult(name="fill", description="d", effect=0.1, interval=(0.0, 0.2), p_value=0.01,
                             p_value_corrected=0.02, correction="Holm", n=10, slice=Slice("a"), decision="shown",
                             control="equal-area").to_json(),
    "CheckResult": CheckResult("maps", "passed", "ok", 1.0).to_json(),
    "NotJudged": NotJudged("model randomisation", "sanity", "no weights", True).to_json(),
    "Verdict": Verdict("clear").to_json(),
    "Finding": Finding(kind="shortcut", subject="cage", slice=Slice("dog"), severity="high", confidence="high",
                       headline="h", effect=0.3).to_json(),
}


def _bullet(name: str) -> str:
    match = re.search(rf"^- \*\*{name}\*\*.*?(?=^- \*\*|^\S|\Z)", DOC, flags=re.M | re.S)
    assert match, f"docs/FORMATS.md has no bullet for {name}"
    return match.group(0)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_key_of_a_record_is_documented(name):
    bullet = _bullet(name)
    missing = [key for key in SAMPLES[name] if f"`{key}`" not in bullet]
    assert not missing, f"{name}: {missing} not in docs/FORMATS.md"


def test_the_documented_report_example_reads_as_typed_records():
    block = DOC[DOC.index("## Report JSON"):]
    example = block[block.index("```json") + len("```json"):block.index("```", block.index("```json") + 7)]
    flags = re.search(r'"flags": (\[.*?\]),\n "sanity"', example, flags=re.S).group(1)
    finding = Finding.from_json(json.loads(flags.replace("...", ""))[0])
    assert finding.deciding_test.decision == "shown" and finding.checks[0].status == "passed"
    verdict = re.search(r'"verdict": (\{.*?\]\}),', example, flags=re.S).group(1)
    assert Verdict.from_json(json.loads(verdict)).status == "flagged"


def _section_records() -> list[type]:
    """Every JsonRecord the renderers read a report or a comparison through."""
    import inspect

    from analysis.report import comparison_records, sections
    from analysis.report.records import JsonRecord

    return [cls for module in (sections, comparison_records) for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, JsonRecord) and cls is not JsonRecord and cls.__module__ == module.__name__]


def _keys(record: type) -> list[str]:
    """The JSON keys a record reads, nested ones too (`swap` and its `towards_donor_rate`); a field that is a
    record of its own (`run.model`) is documented in that record's bullet."""
    from dataclasses import fields

    keys = []
    for f in fields(record):
        path = f.metadata.get("key", f.name)
        keys.extend((path,) if isinstance(path, str) else path)
    return keys


def test_section_records_are_the_ones_the_docs_name():
    names = {cls.__name__ for cls in _section_records()}
    assert {"RunInfo", "Metrics", "SanityCheck", "RegionIntervention", "DiscoveredRegion", "FlagEvidence",
            "TargetIntervention", "ContextIntervention", "RunPoint", "MassChange", "TargetEffect"} <= names


@pytest.mark.parametrize("record", _section_records(), ids=lambda cls: cls.__name__)
def test_every_key_of_a_section_record_is_documented(record):
    bullet = _bullet(record.__name__)
    missing = [key for key in _keys(record) if f"`{key}`" not in bullet]
    assert not missing, f"{record.__name__}: {missing} not in docs/FORMATS.md's bullet"
