"""Explainer trust: can this run's saliency maps be believed at all?"""
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

st.subheader("Sanity checks")
sanity = views.sanity_verdicts(report)
if sanity.empty:
    st.info("No sanity check was recorded for this run.")
else:
    for row in sanity.to_dict("records"):
        passed = row.get("passed")
        verdict = "passed" if passed else ("failed" if passed is not None else "not judged")
        (st.success if passed else st.error)(f"{row['check']}: {verdict}")
    st.dataframe(sanity, hide_index=True, width="stretch")

st.subheader("Faithfulness")
faithfulness = views.faithfulness_rows(report)
if faithfulness.empty:
    st.info("No faithfulness measurement was recorded for this run.")
else:
    st.dataframe(faithfulness, hide_index=True, width="stretch")
