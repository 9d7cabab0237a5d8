"""D-RISE against a straightforward reference loop, the shared-forward contract, seeding, adapters."""
import math

import pytest
import torch

from explainers.base import SaliencyBatch
from explainers.detection import DetectionTarget, TorchvisionDetector
from explainers.drise import DRISE
from explainers.errors import InputError
from explainers.registry import make_explainer
from explainers.rise import mask_chunks

H = W = 16
FIXED_BOXES = torch.tensor([[0.0, 0.0, 8.0, 8.0], [4.0, 4.0, 14.0, 12.0], [8.0, 2.0, 16.0, 16.0]])


class BoxMeanDetector:
    """Hand-built detector: three fixed proposals whose boxes shift with the red mass, objectness = mean
    brightness in the box, class probs = softmax of the box's channel means. Counts masked images seen."""

    def __init__(self):
        self.images_seen = 0
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        self.images_seen += len(images)
        out = []
        for img in images:
            boxes, scores, probs = [], [], []
            for x0, y0, x1, y1 in FIXED_BOXES.tolist():
                patch = img[:, int(y0):int(y1), int(x0):int(x1)]
                shift = float(patch[0].mean()) * 2
                boxes.append([x0 + shift, y0, x1 + shift, y1])
                scores.append(patch.mean())
                probs.append(torch.softmax(patch.mean(dim=(1, 2)) * 4, 0))
            out.append({"boxes": torch.tensor(boxes), "scores": torch.stack(scores), "probs": torch.stack(probs)})
        return out


def reference_similarity(tbox, tprob, det):
    """IoU x cosine x objectness, max over proposals, written out one pair at a time."""
    best = 0.0
    for box, score, prob in zip(det["boxes"].tolist(), det["scores"].tolist(), det["probs"]):
        ix = max(0.0, min(tbox[2], box[2]) - max(tbox[0], box[0]))
        iy = max(0.0, min(tbox[3], box[3]) - max(tbox[1], box[1]))
        inter = ix * iy
        union = (tbox[2] - tbox[0]) * (tbox[3] - tbox[1]) + (box[2] - box[0]) * (box[3] - box[1]) - inter
        cos = float(torch.dot(tprob, prob) / (tprob.norm() * prob.norm()))
        best = max(best, inter / union * cos * score)
    return best


def reference_drise(detector, image, tboxes, tprobs, masks, p, center):
    """Loop over masks: detector on the masked image, similarity per target, weighted sum of masks."""
    weights = torch.zeros(len(masks), len(tboxes), dtype=torch.float64)
    for i, m in enumerate(masks):
        det = detector((image * m)[None])[0]
        for t in range(len(tboxes)):
            weights[i, t] = reference_similarity(tboxes[t].tolist(), tprobs[t], det)
    if center:
        weights = weights - weights.mean(0, keepdim=True)
    return torch.einsum("nt,nhw->thw", weights, masks.double()) / (len(masks) * p)


@pytest.fixture
def problem():
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(2, 3, H, W, generator=gen)
    targets = [DetectionTarget(torch.tensor([[1.0, 1.0, 9.0, 8.0], [6.0, 4.0, 15.0, 13.0]]),
                               torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])),
               DetectionTarget(torch.tensor([[8.0, 3.0, 16.0, 15.0]]), torch.tensor([[0.2, 0.5, 0.3]]))]
    masks = torch.cat(list(mask_chunks(24, 4, 0.5, 1, (H, W), "cpu", chunk=24)))
    return images, targets, masks


@pytest.mark.parametrize("center", [True, False])
def test_matches_reference_loop_on_injected_masks(problem, center):
    images, targets, masks = problem
    drise = DRISE(BoxMeanDetector(), n_masks=len(masks), p=0.5, chunk=7, batch_size=5, center=center)
    maps = drise.explain_detections(images, targets, masks=masks)
    for b in range(2):
        expected = reference_drise(BoxMeanDetector(), images[b], targets[b].boxes, targets[b].probs, masks, 0.5, center)
        assert maps[b].shape == (len(targets[b]), H, W)
        torch.testing.assert_close(maps[b].double(), expected, rtol=1e-5, atol=1e-6)
        assert expected.abs().max() > 1e-3  # the maps are not trivially zero


def test_agrees_with_vision_explanation_methods(problem):
    from vision_explanation_methods.explanations import drise as vem
    from vision_explanation_methods.explanations.common import DetectionRecord

    images, targets, masks = problem
    detector = BoxMeanDetector()
    maps = DRISE(detector, n_masks=len(masks), p=0.5, center=True).explain_detections(images, targets, masks=masks)
    records = []
    for m in masks:
        dets = detector(images * m)
        scores = [vem.compute_affinity_scores(DetectionRecord(t.boxes, torch.ones(len(t)), t.probs),
                                              DetectionRecord(d["boxes"], d["scores"], d["probs"]))
                  for t, d in zip(targets, dets)]
        records.append(vem.MaskAffinityRecord(mask=m.expand(3, H, W).clone(), affinity_scores=scores))
    theirs = vem.saliency_fusion(records, "cpu")  # centred by the mean affinity, then min-max per detection
    for b in range(2):
        for t in range(len(targets[b])):
            ours = maps[b][t]
            ours = (ours - ours.min()) / (ours.max() - ours.min())
            torch.testing.assert_close(ours, theirs[b][t]["detection"][0], rtol=1e-4, atol=1e-5)


def test_all_targets_of_an_image_come_from_the_same_masked_forwards(problem):
    images, targets, _ = problem
    detector = BoxMeanDetector()
    drise = DRISE(detector, n_masks=30, cells=4, chunk=8, batch_size=16)
    maps = drise.explain_detections(images, targets)
    assert detector.images_seen == 2 * 30  # B x N, whatever the number of targets (3 here)
    assert detector.calls == sum(math.ceil(2 * n / 16) for n in (8, 8, 8, 6))
    # explaining one target alone gives the same map: targets do not interact
    alone = DRISE(BoxMeanDetector(), n_masks=30, cells=4, chunk=8, batch_size=16).explain_detections(
        images[:1], [targets[0].split()[1]])
    torch.testing.assert_close(alone[0][0], maps[0][1])


def test_same_seed_same_map_other_seed_other_map(problem):
    images, targets, _ = problem
    a = DRISE(BoxMeanDetector(), n_masks=40, cells=4, seed=5).explain_detections(images, targets)
    b = DRISE(BoxMeanDetector(), n_masks=40, cells=4, seed=5).explain_detections(images, targets)
    c = DRISE(BoxMeanDetector(), n_masks=40, cells=4, seed=6).explain_detections(images, targets)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    assert not torch.allclose(a[0], c[0])


def test_mask_set_is_rises_and_does_not_depend_on_chunk():
    small = torch.cat(list(DRISE(BoxMeanDetector(), n_masks=50, cells=4, p=0.3, seed=2, chunk=7).masks((H, W), "cpu")))
    whole = torch.cat(list(mask_chunks(50, 4, 0.3, 2, (H, W), "cpu", chunk=50)))
    torch.testing.assert_close(small, whole, rtol=0, atol=0)
    assert small.shape == (50, H, W)


def test_rise_masks_shape_range_and_density():
    masks = torch.cat(list(mask_chunks(2000, 8, 0.3, 0, (20, 24), "cpu", chunk=500)))
    assert masks.shape == (2000, 20, 24)
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(float(masks.mean()) - 0.3) < 0.02
    assert not torch.equal(masks[0], masks[1])


def test_explain_one_target_per_image_via_registry(problem):
    images, targets, _ = problem
    explainer = make_explainer("drise", BoxMeanDetector(), n_masks=20, cells=4)
    assert isinstance(explainer, DRISE)
    one_each = DetectionTarget(torch.cat([targets[0].boxes[:1], targets[1].boxes]),
                               torch.cat([targets[0].probs[:1], targets[1].probs]))
    batch = explainer.explain(images, one_each)
    assert isinstance(batch, SaliencyBatch) and batch.maps.shape == (2, H, W) and batch.method == "drise"
    full = explainer.explain_detections(images, [targets[0].split()[0], targets[1]])
    torch.testing.assert_close(batch.maps[0], full[0][0])
    clean = BoxMeanDetector()(images)
    assert batch.scores[1] == pytest.approx(reference_similarity(targets[1].boxes[0].tolist(), targets[1].probs[0],
                                                                 clean[1]), rel=1e-5)
    by_class = explainer.explain(images, torch.tensor([0, 2]))  # the top detection of that class per image
    assert by_class.maps.shape == (2, H, W) and by_class.maps.abs().sum() > 0


def test_torchvision_faster_rcnn_full_probs_match_scores():
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=4,
                                                  box_score_thresh=0.0)
    images = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        full = TorchvisionDetector(model, full_probs=True)(images)
        onehot = TorchvisionDetector(model)(images)
    assert any(len(d["boxes"]) for d in full)
    for f, o in zip(full, onehot):
        torch.testing.assert_close(f["boxes"], o["boxes"])
        assert f["probs"].shape == (len(f["boxes"]), 4)
        torch.testing.assert_close(f["probs"].sum(1), torch.ones(len(f["boxes"])))
        torch.testing.assert_close(f["probs"].gather(1, f["labels"][:, None])[:, 0], f["scores"])
        torch.testing.assert_close(o["probs"].sum(1), o["scores"])  # one-hot x score


def test_stops_per_detection_with_the_reference_map_of_the_masks_it_used(problem):
    """RISE's stopping rule per detection: each detection stops at its own count, below the tolerance, and its
    map is the reference loop's on exactly the masks it used; an image is forwarded until its last detection
    stops; explained alone, a detection stops at the same count with the same map."""
    images, targets, _ = problem
    masks = torch.cat(list(mask_chunks(600, 4, 0.5, 1, (H, W), "cpu", chunk=600)))
    detector = BoxMeanDetector()
    drise = DRISE(detector, n_masks=600, p=0.5, chunk=64, batch_size=48, tolerance=0.3, min_masks=50)
    result = drise.explain_detections_with_counts(images, targets, masks=masks)
    used = torch.cat(result.masks_used)
    assert (used < 600).all() and len(set(used.tolist())) > 1  # stopped early, not all at the same count
    assert (torch.cat(result.estimated_error) < 0.3).all()
    assert detector.images_seen == sum(int(u.max()) for u in result.masks_used)
    for b in range(2):
        for t in range(len(targets[b])):
            n = int(result.masks_used[b][t])
            expected = reference_drise(BoxMeanDetector(), images[b], targets[b].boxes[t:t + 1],
                                       targets[b].probs[t:t + 1], masks[:n], 0.5, True)[0]
            torch.testing.assert_close(result.maps[b][t].double(), expected, rtol=1e-5, atol=1e-6)
    alone = DRISE(BoxMeanDetector(), n_masks=600, p=0.5, chunk=64, batch_size=48, tolerance=0.3,
                  min_masks=50).explain_detections_with_counts(images[:1], [targets[0].split()[1]], masks=masks)
    assert int(alone.masks_used[0][0]) == int(result.masks_used[0][1])
    torch.testing.assert_close(alone.maps[0][0], result.maps[0][1])


def test_estimated_error_is_the_distance_to_the_map_of_many_masks(problem):
    """The estimate at the stopping count is the relative L2 distance (centred) to the expectation, measured
    here against a 3,000-mask map (whose own error is ~0.05)."""
    images, targets, _ = problem
    masks = torch.cat(list(mask_chunks(3000, 4, 0.5, 1, (H, W), "cpu", chunk=3000)))
    many = DRISE(BoxMeanDetector(), n_masks=3000, tolerance=0).explain_detections(images[:1], targets[:1], masks=masks)
    stopped = DRISE(BoxMeanDetector(), n_masks=3000, tolerance=0.2, min_masks=50).explain_detections_with_counts(
        images[:1], targets[:1], masks=masks)
    centre = lambda m: m - m.mean()  # noqa: E731
    for t in range(2):
        actual = float(centre(stopped.maps[0][t] - many[0][t]).norm() / centre(many[0][t]).norm())
        estimate = float(stopped.estimated_error[0][t])
        assert 0.15 < estimate < 0.2 and 0.5 * estimate < actual < 1.6 * estimate, (estimate, actual)


def test_tolerance_zero_uses_every_mask_and_bad_tolerance_is_refused(problem):
    images, targets, _ = problem
    result = DRISE(BoxMeanDetector(), n_masks=120, cells=4, tolerance=0, min_masks=10).explain_detections_with_counts(
        images, targets)
    assert [u.tolist() for u in result.masks_used] == [[120, 120], [120]]
    with pytest.raises(InputError, match="tolerance"):
        DRISE(BoxMeanDetector(), tolerance=-0.1)
