"""Object or cue? Without masks, does what a candidate region shows name the class by its look alone?

Without masks nothing says where the object is: a grid cell or a region discovered from the maps may hold the
object itself (a shape that moves about the image), and filling or swapping it costs right answers because it
*is* the label's evidence. A cue beside the object (a tag, a watermark) is different in kind: a repeated
pattern whose appearance predicts the class. So each mask-free candidate is described by its appearance in
each image that holds it (the mean colour inside the region against the rest of the image: a tag is one colour per class it points at,
an object's area varies with the object and the scene) and asked: does that appearance predict the class,
the image's label or the model's answer? Five-fold cross-validated nearest-centroid accuracy, balanced over
classes, as a share of the way from chance to perfect (`gain`). A candidate whose gain stays below
`MIN_GAIN` is where the model looks, not a shortcut: the report shows it as attention. The model's answer
counts beside the label because an audit set may have the cue decorrelated (a biased model's answers still
follow it there) and a clean model's answers do not follow a tag that carries no information.
"""
from __future__ import annotations

import numpy as np

# 60% of the way from chance to perfect (a 2-class cue right in >= 80% of images, balanced). At 0.5 a clean
# model of 66% accuracy had its cross-shaped object's area at 0.51 (its answers follow the shape's contrast);
# the tags, the samples' watermark and biased models' answers sit at 0.67 and above
MIN_GAIN = 0.6


def appearance(inputs: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, 3): the mean of each channel inside the region minus its mean over the rest of the image,
    present (N,) bool). Against the rest of the image, because a cue is seen against its scene: a white
    watermark on three skin tones was no class's colour in absolute terms (gain -0.04) but always lighter
    than the skin around it.

    inputs (N, 3, H, W) in [0, 1]; masks (N, H, W) bool. The colour's spread is left out on purpose: inside a
    blob cut from the maps it measures how much of the blob the object fills (a filled rectangle against a
    cross), which is the object's shape, and gave an object's area 0.63 of the way to perfect on a clean
    model where its mean colour gave 0.02."""
    masks = np.asarray(masks, dtype=bool)
    count = masks.reshape(len(masks), -1).sum(1)
    present = count > 0
    out = np.zeros((len(masks), 3))
    for start in range(0, len(masks), 64):  # in chunks: 1,000 images at 224 px are 1.2 GB in float64
        part = slice(start, start + 64)
        flat = np.asarray(inputs[part], dtype=np.float64).reshape(-1, 3, masks.shape[-2] * masks.shape[-1])
        m = masks[part].reshape(len(flat), 1, -1)
        inside = (flat * m).sum(2)
        out[part] = inside / np.maximum(count[part], 1)[:, None] - \
            (flat.sum(2) - inside) / np.maximum(m.shape[2] - count[part], 1)[:, None]
    return out, present


def predictive_gain(features: np.ndarray, targets: np.ndarray, *, folds: int = 5, seed: int = 0) -> float | None:
    """How far the features predict `targets` beyond chance: (balanced accuracy - 1/C) / (1 - 1/C) of a
    nearest-centroid rule on standardised features, cross-validated; None with fewer than 2 classes or 10 rows."""
    targets = np.asarray(targets)
    classes = np.unique(targets)
    if len(classes) < 2 or len(targets) < 10:
        return None
    x = (features - features.mean(0)) / np.where(features.std(0) > 1e-9, features.std(0), 1.0)
    fold = np.random.default_rng(seed).permutation(len(x)) % folds
    guess = np.empty(len(x), dtype=targets.dtype)
    for k in range(folds):
        train, test = fold != k, fold == k
        if not test.any():
            continue
        known = [c for c in classes if (targets[train] == c).any()]
        centroids = np.stack([x[train][targets[train] == c].mean(0) for c in known])
        distance = ((x[test][:, None, :] - centroids[None]) ** 2).sum(2)
        guess[test] = np.asarray(known)[distance.argmin(1)]
    recall = [float((guess[targets == c] == c).mean()) for c in classes]
    chance = 1.0 / len(classes)
    return float((np.mean(recall) - chance) / (1 - chance))


def cue_test(inputs, masks, labels, predictions=None, *, class_names=None, seed: int = 0) -> dict:
    """{"cue": bool, "label_gain", "prediction_gain", "n", "text"}: is the region a cue by its look?"""
    features, present = appearance(np.asarray(inputs), np.asarray(masks))
    labels = np.asarray(labels)
    gains = {"label_gain": predictive_gain(features[present], labels[present], seed=seed)}
    if predictions is not None:
        predictions = np.asarray(predictions)
        known = present & (predictions >= 0)
        gains["prediction_gain"] = predictive_gain(features[known], predictions[known], seed=seed)
    best = max((g for g in gains.values() if g is not None), default=None)
    cue = best is not None and best >= MIN_GAIN
    shown = ", ".join(f"the {'label' if k == 'label_gain' else 'model answer'} {v:.0%}"
                      for k, v in gains.items() if v is not None)
    text = (f"what it shows predicts the class ({shown} of the way from chance to perfect): a cue"
            if cue else
            f"what it shows does not predict the class ({shown or 'too few images'} of the way from chance to "
            f"perfect, {MIN_GAIN:.0%} needed): where the model looks for the label's evidence, not a cue")
    return {"cue": bool(cue), **gains, "min_gain": MIN_GAIN, "n": int(present.sum()), "text": text}
