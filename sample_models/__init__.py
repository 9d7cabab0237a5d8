"""Synthetic shortcut scenarios, small architectures, and the deterministic model-version series.

- `sample_models.scenes`: `SCENARIOS` (cage, doctor_nurse, watermark, background), `render(...)` -> arrays,
  `generate(scenario, out_dir, n, size, leak, seed, flip)` -> a dataset folder (docs/FORMATS.md).
  `leak` = P(the shortcut agrees with the label); `flip=True` places it against every label.
- `sample_models.architectures`: `ARCHITECTURES["tiny_cnn"](num_classes)`, Grad-CAM layer `block3` (8x8).
- `sample_models.train`: `python -m sample_models.train [--scenario S] [--out DIR]` trains v1..v5 per
  scenario (v1 biased, v2..v5 with 25/50/75/100% added shortcut-flipped counter-examples) into
  `sample_models/weights/<scenario>/v<k>/` (model.pt, model.pt2, model.json, metrics.json) + SHA256SUMS.
- `sample_models.tagging` / `sample_models.segmenting`: the tagger (water strip -> boat tag) and segmenter
  (band under an object -> its class) scenarios, `generate(out_dir, n, seed)`, v1..v5 trained by
  `python -m sample_models.tagging|segmenting` into `sample_models/weights/tasks/{tagger,segmenter}/`
  (`tiny_cnn` with sigmoid outputs; `tiny_segnet`, Grad-CAM layer `block3` at 16x16) + their SHA256SUMS.
- `sample_models.moving_patch` / `sample_models.shapes_tag`: mask-free series, a cue in a random corner (the demo's
  `moving_patch`: partly biased, fully biased and clean versions in `weights/moving_patch/`).
- `sample_models.property_shortcut`: property shortcuts (one class's images blurred, brighter or warmer); the demo's
  `blur` v1..v5 (the recipe above with the blur as the shortcut), `python -m sample_models.property_shortcut`
  into `weights/property/blur/` + its SHA256SUMS.
"""
