"""bench.small_audit's stage table: each stage lasts from its stderr line to the next one."""
import pytest

from bench.small_audit import stage_seconds


def test_stages_run_from_one_line_to_the_next_and_sum_to_the_wall():
    marks = [("target layer", 1.5), ("evidence", 2.0), ("evidence: interventions", 2.25),
             ("evidence: image properties", 3.0), ("report", 3.5)]
    stages = stage_seconds(marks, wall=4.0)
    assert stages == {"start-up, registration, load model": 1.5, "main pass": 0.5, "evidence": 0.25,
                      "evidence: interventions": 0.75, "evidence: image properties": 0.5, "report": 0.5}
    assert sum(stages.values()) == pytest.approx(4.0)


def test_a_stage_named_twice_adds_up():
    stages = stage_seconds([("target layer", 1.0), ("evidence", 2.0), ("evidence: sanity", 2.5),
                            ("evidence", 3.0)], wall=3.5)
    assert stages["evidence"] == pytest.approx(1.0) and stages["evidence: sanity"] == pytest.approx(0.5)
