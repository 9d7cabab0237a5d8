"""COCO reader (round trip with the scenario writer, RLE, errors) and the segmentation / multi-label targets."""
import json

import numpy as np
import pytest
import torch

from pycocotools import mask as coco_mask

from analysis.data.coco import read_coco, rle_counts, segmentation_mask
from explainers.detection import MultiLabelTargets, SegmentationTarget
from explainers.errors import InputError
from sample_models.detection import encode_rle, make_scenes, write_coco


def test_round_trip_boxes_labels_and_region_masks(tmp_path):
    scenes = make_scenes(5, seed=2, biased=True)
    write_coco(scenes, tmp_path)
    objects = read_coco(tmp_path / "instances.json")
    context = read_coco(tmp_path / "context.json")
    assert len(objects.images) == 5 and objects.categories == {1: "boat", 2: "car"}
    for scene, img, ctx in zip(scenes, objects.images, context.images):
        assert img.path == (tmp_path / f"images/{img.image_id:05d}.png").resolve() and img.path.exists()
        np.testing.assert_allclose(img.boxes, scene.boxes.numpy())
        assert img.labels == [("boat", "car")[c] for c in scene.labels.tolist()]
        masks = ctx.masks()  # uncompressed RLE: exact
        assert ctx.labels == ["water", "road"]
        np.testing.assert_array_equal(masks[0], (scene.regions == 0).numpy())
        np.testing.assert_array_equal(masks[1], (scene.regions == 1).numpy())
        inst = img.masks()  # polygons: each instance mask lies in its box and covers most of the object pixels
        obj = (scene.regions == 2).numpy()
        for k, (x0, y0, x1, y1) in enumerate(img.boxes.astype(int)):
            assert not inst[k][:, :x0].any() and not inst[k][:y0].any()
            in_box = obj[y0:y1, x0:x1]
            assert (inst[k][y0:y1, x0:x1] & in_box).sum() > 0.7 * in_box.sum()


def _rle_to_string(counts):
    """pycocotools' rleToString, written out: the inverse of the decoder under test."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def test_compressed_rle_decodes_to_the_mask():
    rng = np.random.default_rng(0)
    mask = rng.random((13, 17)) < 0.3
    mask[2:9, 4:12] = True
    rle = encode_rle(mask)
    assert rle_counts(_rle_to_string(rle["counts"])) == rle["counts"]
    compressed = {"size": [13, 17], "counts": _rle_to_string(rle["counts"])}
    np.testing.assert_array_equal(segmentation_mask(compressed, 13, 17), mask)
    # the COCO API's own encoder gives the same string, and our reading of its counts is its run lengths
    reference = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert reference["counts"].decode() == compressed["counts"]
    # a known pycocotools string: a 4x4 mask with a 2x2 block at rows 1-2, cols 1-2 is counts [5, 2, 2, 2, 5],
    # stored as deltas from two back after the third: "5", "2", "2", "0", "3"
    expected = np.zeros((4, 4), bool)
    expected[1:3, 1:3] = True
    np.testing.assert_array_equal(segmentation_mask({"size": [4, 4], "counts": "52203"}, 4, 4), expected)


def test_polygons_rasterise_as_the_coco_api_does():
    """A triangle and a square in one annotation: the union, pixel for pixel what pycocotools gives."""
    polygons = [[1.0, 1.0, 9.5, 1.0, 1.0, 7.5], [11, 2, 15, 2, 15, 6, 11, 6]]
    mask = segmentation_mask(polygons, 10, 17)
    reference = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygons, 10, 17))).astype(bool)
    np.testing.assert_array_equal(mask, reference)
    assert mask[2, 2] and mask[4, 13] and not mask[8, 15]
    assert not segmentation_mask([[1, 2, 3, 4]], 10, 17).any()  # a polygon needs three points


@pytest.mark.parametrize("counts,message", [
    ("000o", "ends inside a count"),  # a continuation bit on the last group
    ([3, 200, 1], "sum to 204"),  # runs past the 4x4 buffer: checked before the C decoder writes them
    ("52209", "sum to 22"),  # a compressed string whose runs overrun the mask
])
def test_hostile_rle_is_refused_before_decoding(counts, message):
    with pytest.raises(InputError, match=message):
        segmentation_mask({"size": [4, 4], "counts": counts}, 4, 4)


def _write(tmp_path, images=None, annotations=None, categories=None):
    data = {"images": images if images is not None else [{"id": 1, "file_name": "a.png", "width": 10, "height": 8}],
            "annotations": annotations if annotations is not None else [],
            "categories": categories if categories is not None else [{"id": 1, "name": "boat"}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("images,annotations,message", [
    ([{"id": 1, "file_name": "../outside.png", "width": 10, "height": 8}], [], "points outside"),
    ([{"id": 1, "file_name": "/etc/passwd", "width": 10, "height": 8}], [], "points outside"),
    (None, [{"id": 7, "image_id": 1, "category_id": 9, "bbox": [0, 0, 2, 2]}], "unknown category id 9"),
    (None, [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [5, 2, 8, 3]}], "outside image"),
    (None, [{"id": 7, "image_id": 4, "category_id": 1, "bbox": [0, 0, 2, 2]}], "unknown image id 4"),
    (None, [{"id": 7, "image_id": 1, "category_id": 1, "bbox": "wide"}], "bbox must be"),
])
def test_reader_errors_name_the_file(tmp_path, images, annotations, message):
    path = _write(tmp_path, images, annotations)
    with pytest.raises(InputError, match=message) as err:
        read_coco(path)
    assert str(path) in str(err.value)


def test_reader_refuses_non_coco_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_coco(path)
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(InputError, match="needs lists"):
        read_coco(path)


def test_segmentation_target_gradient_is_the_mask_through_the_network():
    conv = torch.nn.Conv2d(2, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(6.0).reshape(3, 2, 1, 1))
    x = torch.rand(2, 2, 4, 5, requires_grad=True)
    logits = conv(x)
    target = SegmentationTarget.from_prediction(logits.detach(), class_idx=2)
    score = target(logits)
    mask = logits.detach().argmax(1) == 2
    torch.testing.assert_close(score, (logits[:, 2] * mask).sum(dim=(1, 2)))
    (grad,) = torch.autograd.grad(score.sum(), x)
    # class 2's logit is 4 x0 + 5 x1: the gradient is (4, 5) on predicted pixels, 0 elsewhere
    expected = torch.stack([4.0 * mask, 5.0 * mask], 1)
    torch.testing.assert_close(grad, expected)


def test_multilabel_targets_one_row_per_tag_above_threshold():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, -2.0, -0.1]])
    image_idx, target = MultiLabelTargets(threshold=0.6).expand(logits)
    assert image_idx.tolist() == [0, 0] and target.indices.tolist() == [0, 2]
    torch.testing.assert_close(target(logits[image_idx]), torch.tensor([2.0, 0.5]))
    with pytest.raises(InputError):
        MultiLabelTargets(threshold=1.5)
