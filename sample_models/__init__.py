"""Synthetic shortcut scenarios, small architectures, and the deterministic model-version series.

- `sample_models.scenes`: `SCENARIOS` (cage, doctor_nurse, watermark, background), `render(...)` -> arrays,
  `generate(scenario, out_dir, n, size, leak, seed, flip)` -> a dataset folder (docs/FORMATS.md).
  `leak` = P(the shortcut agrees with the label); `flip=True` places it against every label.
- `sample_models.architectures`: `ARCHITECTURES["tiny_cnn"](num_classes)`, Grad-CAM layer `block3` (8x8).
- `sample_models.train`: `python -m sample_models.train [--scenario S] [--out DIR]` trains v1..v5 per
  scenario (v1 biased, v2..v5 with 25/50/75/100% added shortcut-flipped counter-examples) into
  `sample_models/weights/<scenario>/v<k>/` (model.pt, model.pt2, model.json, metrics.json) + SHA256SUMS.
"""
