"""The segmenter's report and comparison (per segment class): `per_target` with the segmenter's words."""
from analysis.report.sections import read_report
from dashboard.task_views import per_target
from dashboard.task_views.per_target import Wording

WORDS = Wording(key="class", section="segmentation", noun="class", score="class's pixel accuracy",
                maps="segment_maps", index="class_idx")


def render(report: dict, run_id: str, version: str, info: dict) -> None:
    miou = read_report(report).metrics.mean_iou
    per_target.render(report, run_id, version, info, WORDS, ("Mean IoU", "n/a" if miou is None else f"{miou:.2f}"))


def render_comparison(comparison: dict, run_ids, versions, labels) -> None:
    per_target.render_comparison(comparison, WORDS)
