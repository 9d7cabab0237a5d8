import base64
import io

import numpy as np
from PIL import Image

from analysis.stats.aggregate import region_table, table_records
from analysis.report.flags import shortcut_flags
from analysis.report.html import overlay_png, render_html
from tests.report.synthetic import planted_frames
from tests.report.test_flags import _evidence

EVIL = "<script>alert('x')</script>"


def _report():
    images, regions = planted_frames(n=60)
    regions["region"] = regions["region"].replace("patch", EVIL)
    images["label"] = images["label"].replace("cat", "<img src=x onerror=alert(1)>")
    table = region_table(images, regions, n_boot=50)
    evidence = _evidence()
    evidence["interventions"][EVIL] = evidence["interventions"].pop("patch")
    evidence["second_explainer"]["regions"] = {EVIL: {"lift": 3.0}}
    flags = shortcut_flags(table, evidence)
    assert flags and flags[0]["region"] == EVIL
    return {"run": {"id": "r1", "name": EVIL, "method": "gradcam", "params": {}, "n_images": 60, "seed": 0,
                    "model": {"name": EVIL, "sha256": "ab" * 32}, "dataset": {"name": "d", "sha256": "cd" * 32}},
            "metrics": {"accuracy": 0.9}, "regions": table_records(table), "flags": flags,
            "sanity": evidence["sanity"], "skipped": [{"image": EVIL, "reason": "truncated PNG"}]}


def test_html_is_self_contained_and_escapes_user_names():
    exemplar = {"image_id": 3, "caption": EVIL, "image": np.random.rand(16, 16, 3), "map": np.random.rand(8, 8)}
    comparison = {"runs": ["v1", EVIL], "summary": EVIL, "map_similarity": [], "accuracy": [],
                  "regions": {EVIL: {"role": None, "changes": [], "runs": [
                      {"run": "v1", "mass_mean": 0.4, "mass_ci": [0.3, 0.5]},
                      {"run": EVIL, "mass_mean": 0.1, "mass_ci": [0.05, 0.15]}]}}}
    html = render_html(_report(), exemplars=[exemplar], comparison=comparison)
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert html.count("<svg") == 2 and "<script" not in html  # both charts inline SVG: no script at all
    assert "https://" not in html and "http://www.w3.org/2000/svg" in html  # nothing fetched from outside
    assert len(html) < 200_000  # plotly.js inlined made it 4.8 MB
    assert html.count("<img alt=") == 1
    assert "high" in html and "passed" in html


def test_overlay_png_decodes_at_image_size():
    data = overlay_png(np.zeros((20, 30, 3), dtype=np.uint8), np.ones((5, 5)))
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    assert image.size == (30, 20)
    pixels = np.asarray(image)
    assert pixels[..., 0].mean() > 100  # full saliency -> red heat on black
