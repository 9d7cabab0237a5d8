"""Widgets shared by several pages."""
from __future__ import annotations

import streamlit as st

from analysis.report.records import Finding
from analysis.report.sections import Label, ReportView, read_report
from dashboard import data, state, views


def run_picker(key: str, current: str | None, statuses: tuple[str, ...] | None = None) -> str | None:
    """A run selectbox that starts at the URL's run and writes the choice back to the URL."""
    runs = data.runs()
    if runs.empty:
        st.info("No audit yet: start one under **New audit**.")
        return None
    if statuses is not None:
        runs = runs[runs.status.isin(statuses)]
    ids = runs["id"].tolist()
    index = ids.index(current) if current in ids else (len(ids) - 1 if ids else None)
    chosen = st.selectbox("Audit", ids, index=index, format_func=data.run_label, key=key)
    if chosen and chosen != st.query_params.get(state.RUN_PARAM):
        state.set_current_run(chosen)
    return chosen


def export_buttons(run_id: str, version: str, key: str = "export") -> None:
    """Download buttons for the run's HTML / JSON / CSV reports (files built by the engine on click)."""
    exporters = data.exporters(run_id, version)
    for fmt, label, mime, suffix in [("html", "Report as HTML", "text/html", ".html"),
                                     ("json", "Report as JSON", "application/json", ".json"),
                                     ("csv", "Region table as CSV", "text/csv", "-regions.csv")]:
        make = exporters[fmt]
        st.download_button(label, data=make or "", file_name=f"{run_id}{suffix}", mime=mime, key=f"{key}_{fmt}",
                           disabled=make is None, on_click="ignore",
                           help=None if make else "This installation's engine cannot write this format yet.")


def demo_progress() -> None:
    """The demo build above every page while it runs: "Demo: 12 of 57 audits done, building cage v3
    (gradcam)", polled every 3 s; each finished audit reruns the page so it shows. A failed or stopped build
    says so, with a button that resumes it (finished audits are kept)."""
    status = data.demo_status()
    if status is None or status.get("state") == "done":
        return
    if status.get("state") == "building":
        _demo_building(int(status.get("done") or 0))
        return
    failed = status.get("failed") or []
    log = f"; log: {status['log']}" if status.get("log") else ""
    if status.get("state") == "failed":
        st.error(f"Demo: {status.get('error') or 'the build failed'}: " +
                 "; ".join(f"{f['audit']}: {f['error']}" for f in failed) + f"{log}.")
    else:
        st.warning(f"Demo: the build stopped at {status.get('done', 0)} of {status.get('total', '?')} audits "
                   f"(its worker exited{log}).")
    if st.button("Resume the demo build", key="demo_resume"):
        data.resume_demo()
        st.rerun()


@st.fragment(run_every=3)
def _demo_building(shown: int) -> None:
    status = data.demo_status() or {}
    if status.get("state") != "building" or int(status.get("done") or 0) != shown:
        st.rerun()  # an audit landed (or the build ended): the whole page again, with it
    done, total = int(status.get("done") or 0), int(status.get("total") or 0)
    current = f", building {status['current']}" if status.get("current") else ""
    st.progress(done / total if total else 0.0,
                text=f"Demo: {done} of {total} audits done{current}" if total else "Demo: starting the build")
    for failure in status.get("failed") or []:
        st.warning(f"Demo: {failure['audit']} failed: {failure['error']}")


VERDICT_BOX = {"flagged": st.error, "cannot_judge": st.warning, "clear": st.success}


def verdict_box(report: dict | ReportView) -> None:
    """The run's verdict first, for every task: its word, what it means, the reasons, what it could not see."""
    verdict = read_report(report).verdict
    if verdict is None:
        return
    reasons = "".join(f"\n- {views.plain(reason)}" for reason in verdict.reasons)
    VERDICT_BOX[verdict.status](f"**Verdict: {verdict.label}.** {verdict.summary}{reasons}")
    if verdict.not_tested:
        st.caption("What this audit could not see: " + "; ".join(views.plain(r) for r in verdict.not_tested) + ".")


def power_section(report) -> None:
    """What each "no flag" could have missed, and the test family: the same lines for every task's report."""
    power, testing = views.power_lines(report)
    if power or testing:
        st.subheader("What a \"no flag\" could have missed")
        for line in power:
            st.markdown("- " + views.plain(line))
        if testing:
            st.caption(views.plain(testing))


def finding_panel(finding: Finding | dict, label: Label | dict | None = None) -> None:
    """One finding: its severity and headline, then its evidence in the report's own words
    (`Finding.evidence_lines`: the deciding test first, the other tests, the checks, the notes); a person's
    label on its region under the headline."""
    finding = finding if isinstance(finding, Finding) else Finding.from_json(finding)
    label = label if label is None or isinstance(label, Label) else Label.from_json(label)
    with st.container(border=True):
        st.markdown(f"**{views.plain(finding.severity.upper())}** · {views.plain(finding.headline)}.")
        if label is not None:
            st.info(views.plain(label.text) + (f" ({views.plain(label.note)})" if label.note else ""))
        for line in finding.evidence_lines():
            st.markdown("- " + views.plain(line))
