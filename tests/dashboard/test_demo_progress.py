"""The demo build's state on the dashboard (AppTest, from a status file as the builder writes it): progress
while it builds, a failure or a stopped worker said with a Resume button, and Resume starts the builder
again with the options it had."""
import os

import pytest

from analysis.demo.status import read_status, write_status
from tests.dashboard.apptest import app_opener

DEAD_PID = 2 ** 22 + 12345  # above Linux's pid_max default: never a live process


@pytest.fixture
def app(tmp_path, monkeypatch):
    return tmp_path, app_opener(tmp_path, monkeypatch)


def _progress_texts(at) -> list[str]:
    return [element.proto.text for element in at.get("progress")]


def test_a_building_demo_shows_its_progress_on_every_page(app):
    root, make = app
    write_status(root, state="building", pid=os.getpid(), total=57, done=12, current="cage v3 (gradcam)",
                 failed=[{"audit": "tagger v2 (gradcam)", "error": "disk full"}])
    at = make()
    assert _progress_texts(at) == ["Demo: 12 of 57 audits done, building cage v3 (gradcam)"]
    assert any("tagger v2 (gradcam) failed: disk full" in w.value for w in at.warning)
    assert any("The demo is being built" in i.value for i in at.info)
    at = make("app_pages/new_audit.py")
    assert _progress_texts(at) == ["Demo: 12 of 57 audits done, building cage v3 (gradcam)"]


def test_a_finished_demo_shows_no_progress(app):
    root, make = app
    write_status(root, state="done", pid=DEAD_PID, total=2, done=2, current=None, failed=[])
    at = make()
    assert _progress_texts(at) == [] and not at.error and not at.button


def test_a_failed_build_is_said_and_resume_starts_it_again_with_its_options(app, monkeypatch):
    root, make = app
    write_status(root, state="failed", pid=DEAD_PID, total=4, done=3, current=None, log=str(root / "demo-build.log"),
                 failed=[{"audit": "cage v5 (gradcam)", "error": "model.pt2: not a zip file"}],
                 error="1 of 4 audits failed", arguments=["--versions", "1,5"])
    started = []
    monkeypatch.setattr("analysis.store.jobs.spawn_cli",
                        lambda arguments, log: started.append((arguments, log)) or os.getpid())
    at = make()
    assert [e.value for e in at.error] == [
        f"Demo: 1 of 4 audits failed: cage v5 (gradcam): model.pt2: not a zip file; log: {root / 'demo-build.log'}."]
    at.button(key="demo_resume").click().run()
    assert started == [(["demo", "--workspace", str(root.resolve()), "--versions", "1,5"],
                        root.resolve() / "demo-build.log")]
    assert read_status(root)["state"] == "building"
    assert _progress_texts(at) == ["Demo: 3 of 4 audits done"]


def test_a_builder_that_died_reads_as_stopped(app):
    root, make = app
    write_status(root, state="building", pid=DEAD_PID, total=57, done=20, current="watermark v2 (gradcam)")
    assert read_status(root)["state"] == "stopped"
    at = make()
    assert [w.value for w in at.warning] == [
        "Demo: the build stopped at 20 of 57 audits (its worker exited)."]
    assert at.button(key="demo_resume")


def test_start_build_says_building_at_once_but_leaves_a_finished_demo_done(app, monkeypatch):
    """The dashboard opens while the builder starts: on a fresh workspace the page says the build is
    starting; on a built one the builder only checks (and exits), so the page shows no progress."""
    from analysis.demo.status import start_build

    root, make = app
    monkeypatch.setattr("analysis.store.jobs.spawn_cli", lambda arguments, log: os.getpid())
    assert start_build(root) == os.getpid()
    assert _progress_texts(make()) == ["Demo: starting the build"]
    write_status(root, state="done", pid=DEAD_PID, total=2, done=2)
    start_build(root)
    assert read_status(root)["state"] == "done" and _progress_texts(make()) == []
