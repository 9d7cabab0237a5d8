"""Open the dashboard under `streamlit.testing.v1.AppTest` on a workspace: how every page test starts."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


def app_opener(root, monkeypatch, timeout: float = 60):
    """`make(page=None, **query)` -> the app run once (on `page` if given), asserted free of exceptions."""
    monkeypatch.setenv("SALIENCY_AUDIT_WORKSPACE", str(root))

    def make(page: str | None = None, **query):
        at = AppTest.from_file(APP, default_timeout=timeout)
        at.query_params.update(query)
        at.run()
        if page:
            at.switch_page(page).run()
        assert not at.exception, [e.message for e in at.exception]
        return at
    return make
