"""Explainer trust: can this run's saliency maps be believed at all? A verdict per method, with the numbers
beside the random baseline they must beat."""
import streamlit as st

from dashboard import data, state, views
from dashboard.components import run_picker

st.title("Explainer trust")
st.markdown(
    "**Sanity checks** re-run the explainer on a model whose weights were randomised: a trustworthy explainer "
    "produces very different maps (low similarity), one that does not is drawing edges of the image, not "
    "reading the model. **Faithfulness** deletes the pixels the map ranks highest and watches the score fall: "
    "the faster it falls compared with deleting random pixels, the more the map reflects what the model uses.")
run_id = run_picker("trust_run", state.current_run(), statuses=("done",))
if run_id is None:
    st.stop()
report = data.report(run_id, data.version(run_id))

methods = data.trust(report)
if not methods:
    st.info("No sanity or faithfulness check was recorded for this run.")
for entry in methods:
    with st.container(border=True):
        st.markdown(f"#### {views.plain(entry['method'])}")
        say = {"trustworthy": st.success, "doubtful": st.error}.get(entry["verdict"], st.info)
        say({"trustworthy": "Trustworthy: it passed every check below.",
             "doubtful": "Doubtful: it failed at least one check below; read its maps with care.",
             }.get(entry["verdict"], "Not checked: no check judged this explainer."))
        for check in entry["checks"]:
            mark = {True: "passed", False: "failed", None: "note"}[check["passed"]]
            st.markdown(f"- **{views.plain(check['name'])}** ({mark}): {views.plain(check['text'])}")
