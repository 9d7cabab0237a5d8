"""Page bodies of the tasks whose reports are not a classifier's: view name -> render function.

The report and compare pages look the run's view up here (`analysis.runs.tasks.view_of`); each module holds
one task's wording around the shared per-target body (`per_target`); detection has its own
(`dashboard.detection_views`).
"""
from dashboard import detection_views
from dashboard.task_views import multilabel, segmentation

REPORT_BODIES = {"detection": detection_views.render, "multilabel": multilabel.render,
                 "segmentation": segmentation.render}
COMPARISON_BODIES = {"detection": detection_views.render_comparison, "multilabel": multilabel.render_comparison,
                     "segmentation": segmentation.render_comparison}
