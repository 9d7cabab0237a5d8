"""The property part of a classifier's evidence: the model-free screen of the evidence sample's image
properties against the labels, then the property interventions on the model for the associations the screen
found (a property that marks a class in the data), as one JSON-able record.

Why beside the regions: a cue no region holds (one class's photos slightly blurred, warmer, brighter) is
invisible to region shares and to region fills (Adebayo et al. 2022); the screen says the data carries it, the
interventions say the model reads it. `analysis.report.flags.property_findings` turns the flagged results
into findings; the verdict reads `screen.not_tested` and the undecided candidates the screen associated.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np

from analysis.evidence.property_interventions import Candidate, property_interventions
from analysis.evidence.property_moves import MOVED_PROPERTIES
from analysis.evidence.property_screen import screen
from analysis.stats.image_properties import PIXEL_PROPERTIES, attribute_properties, pixel_properties


def property_evidence(model, inputs, labels: np.ndarray, classes: list[str], *, attributes: list[dict] | None = None,
                      base_predictions=None, seed: int = 0, batch_size: int = 64) -> dict:
    """`{"screen": {...}, "interventions": [...], "design": {...}, "moved": [...], "not_moved": [...]}`."""
    values = pixel_properties(inputs)
    if attributes:
        values.update(attribute_properties(attributes))
    found = screen(values, labels, classes)
    # Only what the data carries is moved: a property the screen associates with a class. Moving every property
    # at a default step flagged clean models (cage and doctor/nurse v5: "contrast predicts cat") for answers
    # that change when images leave the range the model was trained on, which is no shortcut.
    candidates = [Candidate(a.property, classes.index(a.class_name), a.direction) for a in found.flagged
                  if a.property in MOVED_PROPERTIES]
    tested = property_interventions(model, inputs, labels, classes, candidates=candidates, screen=found, seed=seed,
                                    batch_size=batch_size, base_predictions=base_predictions) if candidates else None
    return {"screen": {"associations": [asdict(a) for a in found.associations], "not_tested": found.not_tested,
                       "alpha": found.alpha, "min_separation": found.min_separation, "correction": found.correction},
            "interventions": [asdict(r) for r in tested.results] if tested else [],
            "design": tested.design if tested else {},
            "moved": list(MOVED_PROPERTIES),
            "not_moved": [p for p in dict.fromkeys((*PIXEL_PROPERTIES, *values)) if p not in MOVED_PROPERTIES]}
