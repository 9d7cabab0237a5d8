"""A small COCO folder of biased boat/car scenes and finished D-RISE runs of both sample detectors on it,
built once per session (the CLI path a user takes), shared by the run, report and dashboard tests."""
import pytest

from analysis.cli import main
from detection_helpers import N_IMAGES, run_args
from sample_models.detection import make_scenes, write_coco


@pytest.fixture(scope="session")
def coco_scenes(tmp_path_factory):
    scenes = make_scenes(N_IMAGES, seed=11, biased=True)
    folder = write_coco(scenes, tmp_path_factory.mktemp("coco") / "boats")
    return scenes, folder


@pytest.fixture(scope="session")
def detection_runs(tmp_path_factory, coco_scenes):
    """{"ws": workspace root, "biased": run id, "debiased": run id} (plain main(), output not captured)."""
    import contextlib
    import io

    ws = tmp_path_factory.mktemp("detws") / "ws"
    runs = {"ws": ws}
    for version in ("biased", "debiased"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = main([str(a) for a in run_args(ws, version, coco_scenes[1])])
        assert code == 0
        runs[version] = out.getvalue().strip().splitlines()[-1]
    return runs


@pytest.fixture(scope="session")
def yolo_files(tmp_path_factory):
    """A random YOLOv8n (from its yaml) as an Ultralytics checkpoint and as an ONNX export (`yolo_helpers`)."""
    from yolo_helpers import build_yolo, write_yolo_files

    model = build_yolo()
    return {"model": model, **write_yolo_files(model, tmp_path_factory.mktemp("yolo"))}
