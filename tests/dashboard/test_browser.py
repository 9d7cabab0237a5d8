"""End to end in headless Chromium against `streamlit run dashboard/app.py`.

Overview -> a report (from its bookmarkable URL) -> overlay toggled off -> a real audit started from the
New audit page (worker process, real tiny model) -> page reloaded mid-run -> the audit finishes.
Screenshots go to test-artifacts/ for a person to look at.
"""
import os
import subprocess
from pathlib import Path

import pytest

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from workspace_builder import build_workspace, register_real_model  # noqa: E402

from dashboard.launch import free_port, streamlit_command, wait_until_serving  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

UPLOAD_LIMIT_MB = 1

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Debian's chromium is a README prerequisite: missing, the test fails


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser") / "workspace"
    ids = build_workspace(root)
    ids["real_model"] = register_real_model(root)
    port = free_port()
    env = dict(os.environ, SALIENCY_AUDIT_WORKSPACE=str(root), PYTHONPATH=str(REPO))
    log = open(tmp_path_factory.mktemp("log") / "streamlit.log", "wb")
    # The product's own launch command (every setting of dashboard/.streamlit/config.toml), from a folder
    # that has no .streamlit of its own, with a 1 MB upload limit so the limit can be tested byte-exactly.
    command = streamlit_command(port, {"server.maxUploadSize": UPLOAD_LIMIT_MB})
    proc = subprocess.Popen(command, cwd=tmp_path_factory.mktemp("elsewhere"), env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    wait_until_serving(port, timeout=60)
    yield f"http://127.0.0.1:{port}", ids, root
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


@pytest.fixture(scope="module")
def page():
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1800})
        yield context.new_page()
        browser.close()


def _no_exception(page):
    assert page.locator("[data-testid='stException']").count() == 0


def test_overview_report_overlay_and_a_live_audit(server, page):
    url, ids, root = server
    page.goto(url, timeout=60_000)
    expect(page.get_by_text("Open shortcut flags")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Audits", exact=True).first).to_be_visible()
    _no_exception(page)
    expect(page.get_by_role("heading", name="Datasets")).to_be_visible(timeout=60_000)  # last element: script done
    page.wait_for_timeout(2000)  # data grids draw on a canvas after the page settles
    page.screenshot(path=str(ARTIFACTS / "01-overview.png"), full_page=True)

    run_v1 = ids["runs"][0]
    page.goto(f"{url}/report?run={run_v1}", timeout=60_000)
    expect(page.get_by_text("Images explained")).to_be_visible(timeout=60_000)
    page.get_by_role("tab", name="Attention by region").click()
    expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=30_000)
    _no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "02-report.png"), full_page=True)

    page.get_by_role("tab", name="Gallery").click()
    gallery = page.locator("[data-testid='stImage'] img")
    expect(gallery.first).to_be_visible(timeout=30_000)
    with_overlay = gallery.first.get_attribute("src")
    page.screenshot(path=str(ARTIFACTS / "03-gallery-overlay.png"), full_page=True)
    page.get_by_role("button", name="Enlarge").first.click()
    expect(page.get_by_text("Region outlines")).to_be_visible(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "03b-enlarged.png"), full_page=True)
    with_overlay = gallery.first.get_attribute("src")
    page.get_by_text("Saliency overlay").click()
    expect(gallery.first).not_to_have_attribute("src", with_overlay, timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "04-gallery-no-overlay.png"), full_page=True)
    assert f"run={run_v1}" in page.url  # bookmarkable

    page.goto(f"{url}/new-audit", timeout=60_000)
    expect(page.get_by_text("Estimated time")).to_be_visible(timeout=60_000)
    # The newest model (the real tiny CNN) is preselected.
    expect(page.get_by_text(ids["real_model"], exact=False).first).to_be_visible()
    number = page.get_by_label("Images to sample")
    number.fill("12")
    number.press("Enter")
    page.get_by_role("button", name="Start audit").click()
    expect(page.get_by_text("Started", exact=False)).to_be_visible(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "05-audit-started.png"), full_page=True)

    page.reload()  # the job lives in its own process; the page finds it again in the catalog
    expect(page.get_by_text("Audits in progress")).to_be_visible(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "06-after-reload.png"), full_page=True)
    expect(page.get_by_role("link", name="Open report").first).to_be_visible(timeout=240_000)
    expect(page.get_by_text("12 / 12 images").first).to_be_visible(timeout=30_000)
    _no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "07-audit-done.png"), full_page=True)
    page.get_by_role("link", name="Open report").first.click()
    expect(page.get_by_text("Images explained")).to_be_visible(timeout=60_000)
    expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=60_000)
    assert "run=" in page.url
    page.screenshot(path=str(ARTIFACTS / "08-new-report.png"), full_page=True)


HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def test_names_from_uploads_are_text_never_html(server, page):
    url, ids, root = server
    from analysis.store.workspace import Workspace

    workspace = Workspace(root)
    run = workspace.run(ids["runs"][0])
    hostile_run = workspace.create_run(run["model_id"], run["dataset_id"], "saliency", {"note": "xss"}, n=12,
                                       seed=0, name=HOSTILE)
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{url}/report?run={hostile_run}", timeout=60_000)
    expect(page.get_by_text("Bias report").first).to_be_visible(timeout=60_000)
    page.wait_for_timeout(3000)
    page.goto(url, timeout=60_000)
    expect(page.get_by_role("heading", name="Datasets")).to_be_visible(timeout=60_000)
    page.wait_for_timeout(2000)
    _no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "06-hostile-names.png"), full_page=True)
    assert dialogs == []  # neither the onerror handler nor the script ran, on either page
    assert page.locator("img[src='x']").count() == 0 and page.locator("script:text('alert(2)')").count() == 0


def test_an_upload_one_byte_over_the_limit_is_refused(server, page, tmp_path):
    """Streamlit counts the limit twice, differently: its frontend takes a megabyte as 10^6 bytes (outside
    Windows), its server as 2^20 bytes of request body (multipart framing included, so its edge is a few
    hundred bytes soft). The browser's edge is checked to the byte; a client that skips the browser is
    refused one byte over the server's limit, and a file the browser accepts is accepted by the server."""
    url, _, _ = server
    browser_limit, server_limit = UPLOAD_LIMIT_MB * 1000**2, UPLOAD_LIMIT_MB * 1024**2
    at_limit, over = tmp_path / "at_limit.pt2", tmp_path / "over_limit.pt2"
    at_limit.write_bytes(b"\0" * browser_limit)
    over.write_bytes(b"\0" * (browser_limit + 1))
    uploads = []
    page.on("request", lambda request: uploads.append((request.url, request.headers)) if request.method == "PUT" else None)
    page.goto(f"{url}/upload", timeout=60_000)
    expect(page.get_by_text("Model file", exact=False).first).to_be_visible(timeout=60_000)
    expect(page.get_by_text(f"Files up to {UPLOAD_LIMIT_MB} MB each", exact=False)).to_be_visible()
    model_input = page.locator("input[type='file']").first

    model_input.set_input_files(str(over))
    expect(page.get_by_text("or smaller", exact=False)).to_be_visible(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "09-upload-over-limit.png"), full_page=True)
    assert uploads == []  # refused in the browser: nothing was sent

    page.reload()
    expect(page.get_by_text("Model file", exact=False).first).to_be_visible(timeout=60_000)
    page.locator("input[type='file']").first.set_input_files(str(at_limit))  # exactly the limit: sent
    expect(page.get_by_text("at_limit.pt2")).to_be_visible(timeout=30_000)
    expect(page.get_by_role("button", name="Check and register the model")).to_be_enabled(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "10-upload-at-limit.png"), full_page=True)
    assert page.get_by_text("or smaller", exact=False).count() == 0
    assert len(uploads) == 1

    status_at, status_over = page.evaluate(
        """async ([target, xsrf, size]) => {
            const put = async (n) => {
                const form = new FormData();
                form.append("file", new Blob([new Uint8Array(n)]), "x.pt2");
                return (await fetch(target, {method: "PUT", body: form, headers: {"X-Xsrftoken": xsrf}})).status;
            };
            return [await put(size[0]), await put(size[1])];
        }""", [uploads[0][0], uploads[0][1].get("x-xsrftoken", ""), [browser_limit, server_limit + 1]])
    assert status_at in (200, 204) and status_over == 413
