"""The tagger's report and comparison (per tag): `per_target` with the tagger's words."""
from analysis.report.sections import read_report
from dashboard.task_views import per_target
from dashboard.task_views.per_target import Wording

WORDS = Wording(key="tag", section="multilabel", noun="tag", score="tag's probability", maps="tag_maps",
                index="tag_idx")


def render(report: dict, run_id: str, version: str, info: dict) -> None:
    accuracy = read_report(report).metrics.accuracy
    per_target.render(report, run_id, version, info, WORDS, ("Exact tag sets", "n/a" if accuracy is None else f"{accuracy:.1%}"))


def render_comparison(comparison: dict, run_ids, versions, labels) -> None:
    per_target.render_comparison(comparison, WORDS)
