"""The Upload page's model check through the warm helper: the same answer as a cold `inspect`, errors in the
command's words, a hang cut at the timeout, and a helper that recovers for the next check."""
import json

import pytest

from analysis.inspect_model import inspect
from analysis.warm_inspector import WarmInspector
from tests.dashboard.workspace_builder import write_tag_model


@pytest.fixture(scope="module")
def inspector():
    warm = WarmInspector()
    yield warm
    warm._stop()


def test_a_warm_check_answers_as_the_cold_command(tmp_path, inspector):
    model = write_tag_model(tmp_path / "v1", 1)
    card = model.parent / "model.json"
    warm = inspector.inspect(model, card)
    assert warm == inspect(str(model), str(card))
    assert warm["format"] == "pt2" and warm["classes"] == ["circle", "square"] and "features" in warm["layers"]
    again = inspector.inspect(model, card)  # a second check: a fresh child, the same answer
    assert again == warm


def test_a_bad_card_is_one_error_line_and_the_helper_goes_on(tmp_path, inspector):
    model = write_tag_model(tmp_path / "v2", 2)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**json.loads((model.parent / "model.json").read_text()),
                                 "classes": ["a", "b", "c"]}))
    answer = inspector.inspect(model, wrong)
    assert set(answer) == {"error"} and answer["error"].startswith("error: ")
    assert "lists 3 classes but the model outputs 2" in answer["error"]
    assert inspector.inspect(model, model.parent / "model.json")["format"] == "pt2"


def test_a_check_past_its_timeout_is_stopped_and_the_next_one_starts_a_new_helper(tmp_path, inspector):
    model = write_tag_model(tmp_path / "v3", 1)
    card = model.parent / "model.json"
    first_helper = inspector._ensure().pid
    assert inspector.inspect(model, card, timeout=0.001) == {
        "error": "inspecting the model took longer than 0 s"}
    assert inspector._process is None  # killed with whatever child it had
    answer = inspector.inspect(model, card)
    assert answer["format"] == "pt2" and inspector._process.pid != first_helper


def test_start_never_waits_for_a_check_in_progress(inspector):
    import threading

    inspector._lock.acquire()  # another tab's check holds the helper
    try:
        opening = threading.Thread(target=inspector.start, daemon=True)  # the Upload page of a second tab
        opening.start()
        opening.join(timeout=60)  # a hang detector, not a timing: a start that waited would still be blocked
        assert not opening.is_alive()
    finally:
        inspector._lock.release()
    inspector.start()
    assert inspector._process is not None and inspector._process.poll() is None
