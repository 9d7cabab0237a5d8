"""Dataset folders, zips and ImageFolder trees on real files; validation before any compute."""
import json
import os
import shutil
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from analysis.data.datasets import (
    DatasetError, Item, Region, open_dataset, parse_manifest, parse_regions,
)
from analysis.data.images import ImageError
from explainers.errors import InputError

REGIONS = {"regions": {"0": {"name": "background"}, "1": {"name": "cat", "role": "core"},
                       "2": {"name": "cage"}}}


def _write_dataset(root, n=4, size=(8, 6), regions=REGIONS, manifest=None):
    """n images (PNG, pixel values derived from the mask) + L masks with ids 0..2 + regions.json."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = ["image,label,mask,in_cage"]
    for i in range(n):
        ids = rng.integers(0, 3, (size[1], size[0]), dtype=np.uint8)
        Image.fromarray((ids * 100).astype(np.uint8)).convert("RGB").save(root / "images" / f"{i:03d}.png")
        Image.fromarray(ids).save(root / "masks" / f"{i:03d}.png")
        rows.append(f"images/{i:03d}.png,{'cat' if i % 2 else 'dog'},masks/{i:03d}.png,{'yes' if i < 2 else 'no'}")
    (root / "manifest.csv").write_text(manifest if manifest is not None else "\n".join(rows) + "\n")
    if regions is not None:
        (root / "regions.json").write_text(json.dumps(regions))
    return root


def _zip_folder(folder, zip_path, top=None):
    with zipfile.ZipFile(zip_path, "w") as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                rel = path.relative_to(folder).as_posix()
                z.write(path, f"{top}/{rel}" if top else rel)
    return zip_path


def _problems(dataset, classes=None):
    with pytest.raises(DatasetError) as info:
        dataset.validate(classes)
    return info.value


def test_dataset_error_is_an_input_error():
    assert issubclass(DatasetError, InputError)


def test_manifest_dataset_opens_validates_and_loads(tmp_path):
    ds = open_dataset(_write_dataset(tmp_path / "pets"))
    assert ds.name == "pets" and len(ds) == 4
    assert ds.classes == ("cat", "dog")
    assert ds.attributes == ("in_cage",)
    assert ds.has_masks
    assert ds.regions == {0: Region(0, "background", None), 1: Region(1, "cat", "core"), 2: Region(2, "cage", None)}
    assert ds.items[1] == Item(1, "images/001.png", "cat", "masks/001.png", {"in_cage": "yes"})
    assert [item.image_id for item in ds.items] == [0, 1, 2, 3]
    ds.validate(classes=["cat", "dog"])
    image, mask = ds.load(ds.items[2])
    assert image.mode == "RGB" and image.size == (8, 6)
    assert mask.dtype == np.int32 and mask.shape == (6, 8)
    np.testing.assert_array_equal(mask * 100, np.asarray(image)[..., 0])
    np.testing.assert_array_equal(mask, np.asarray(Image.open(tmp_path / "pets/masks/002.png")))


def test_dataset_without_masks(tmp_path):
    root = tmp_path / "plain"
    root.mkdir()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(root / "a.jpg")
    (root / "manifest.csv").write_text("image,label\na.jpg,x\n")
    ds = open_dataset(root)
    assert not ds.has_masks and ds.regions == {} and ds.attributes == ()
    ds.validate()
    image, mask = ds.load(ds.items[0])
    assert mask is None and image.size == (4, 4)


def test_exif_rotated_image_and_mask_load_aligned(tmp_path):
    root = _write_dataset(tmp_path / "d", n=1, size=(8, 6))
    ids = np.asarray(Image.open(root / "masks/000.png"))
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray((ids * 100).astype(np.uint8)).convert("RGB").save(root / "images/000.png", exif=exif)
    ds = open_dataset(root)
    ds.validate()
    image, mask = ds.load(ds.items[0])
    assert image.size == (6, 8) and mask.shape == (8, 6)
    np.testing.assert_array_equal(mask, np.rot90(ids, k=-1))
    np.testing.assert_array_equal(mask * 100, np.asarray(image)[..., 0])


def test_image_folder_tree(tmp_path):
    root = tmp_path / "imgs"
    for cls, names in {"dog": ["b.jpg", "a.PNG"], "cat": ["z.jpeg", "sub/y.png"], ".hidden": ["x.png"]}.items():
        for name in names:
            (root / cls / name).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (3, 3)).save(root / cls / name, format="PNG" if "png" in name.lower() else "JPEG")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / ".DS_Store").write_bytes(b"\x00")
    ds = open_dataset(root)
    assert [(i.image_id, i.image, i.label) for i in ds.items] == [
        (0, "cat/sub/y.png", "cat"), (1, "cat/z.jpeg", "cat"), (2, "dog/a.PNG", "dog"), (3, "dog/b.jpg", "dog")]
    assert ds.classes == ("cat", "dog") and not ds.has_masks and ds.regions == {}
    ds.validate(classes=["cat", "dog", "bird"])
    assert ds.load(ds.items[0])[0].size == (3, 3)


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no manifest.csv and no class folders with images"):
        open_dataset(tmp_path / "empty")


@pytest.mark.parametrize("top", [None, "pets"])
def test_zip_round_trip_gives_the_same_dataset(tmp_path, top):
    folder = open_dataset(_write_dataset(tmp_path / "pets"))
    zipped_path = _zip_folder(tmp_path / "pets", tmp_path / "pets.zip", top)
    work = tmp_path / "work"
    zipped = open_dataset(zipped_path, workdir=work)
    assert zipped.name == "pets"
    assert zipped.items == folder.items and zipped.regions == folder.regions
    assert zipped.root.is_relative_to(work)
    zipped.validate(classes=["cat", "dog"])
    for a, b in zip(folder.items, zipped.items):
        np.testing.assert_array_equal(folder.load(a)[1], zipped.load(b)[1])
    assert zipped.sha256 == folder.sha256
    again = open_dataset(zipped_path, workdir=work)  # reuses the finished extraction
    assert again.root == zipped.root and len(list(work.iterdir())) == 1


def test_zipped_image_folder_with_a_wrapper_folder(tmp_path):
    root = tmp_path / "tree"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        Image.new("RGB", (2, 2)).save(root / cls / "1.png")
    ds = open_dataset(_zip_folder(root, tmp_path / "tree.zip", top="tree"), workdir=tmp_path / "w")
    assert ds.classes == ("cat", "dog") and [i.image for i in ds.items] == ["cat/1.png", "dog/1.png"]


def test_hostile_zip_becomes_a_clear_error(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("../escape.csv", "x")
    with pytest.raises(InputError, match="outside the archive folder"):
        open_dataset(bad, workdir=tmp_path / "w")
    assert not (tmp_path / "escape.csv").exists()


def test_not_a_dataset_path(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("hi")
    with pytest.raises(DatasetError, match="not a folder or a .zip"):
        open_dataset(tmp_path / "file.txt")


# -- validation ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "images/../../outside.png",
                                  "..\\outside.png", "C:/Windows/win.ini"])
def test_manifest_paths_escaping_the_folder(tmp_path, path):
    root = tmp_path / "d"
    _write_dataset(root, n=1, regions=None, manifest=f"image,label\nimages/000.png,a\n{path},b\n")
    (tmp_path / "outside.png").write_bytes((root / "images/000.png").read_bytes())
    ds = open_dataset(root)
    err = _problems(ds)
    assert err.total == 1
    assert "manifest.csv line 3" in err.problems[0] and repr(path.replace("\\", "/")) in err.problems[0]
    with pytest.raises(DatasetError, match="manifest.csv line 3"):
        ds.load(ds.items[1])


def test_symlink_out_of_the_folder_is_refused(tmp_path):
    root = _write_dataset(tmp_path / "d", n=1, regions=None, manifest="image,label\nimages/link.png,a\n")
    secret = tmp_path / "secret.png"
    Image.new("RGB", (2, 2)).save(secret)
    os.symlink(secret, root / "images" / "link.png")
    ds = open_dataset(root)
    err = _problems(ds)
    assert "points outside the dataset folder" in err.problems[0] and "line 2" in err.problems[0]
    with pytest.raises(DatasetError):
        ds.load(ds.items[0])


def test_symlink_inside_the_folder_is_fine(tmp_path):
    root = _write_dataset(tmp_path / "d", n=1, regions=None, manifest="image,label\nimages/link.png,a\n")
    os.symlink(root / "images" / "000.png", root / "images" / "link.png")
    dataset = open_dataset(root)
    dataset.validate()
    (item,) = dataset.items
    image, _ = dataset.load(item)
    assert item.image == "images/link.png"
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(root / "images" / "000.png").convert("RGB")))


def test_missing_files_are_listed_with_line_and_fix(tmp_path):
    root = _write_dataset(tmp_path / "d")
    (root / "images/001.png").unlink()
    (root / "masks/002.png").unlink()
    err = _problems(open_dataset(root))
    assert err.total == 2
    assert err.problems[0].startswith("manifest.csv line 3: image file 'images/001.png' not found")
    assert err.problems[1].startswith("manifest.csv line 4: mask file 'masks/002.png' not found")
    assert "fix the path or add the file" in str(err)


def test_wrong_size_mask_names_both_files(tmp_path):
    root = _write_dataset(tmp_path / "d")
    Image.fromarray(np.zeros((5, 8), np.uint8)).save(root / "masks/001.png")
    err = _problems(open_dataset(root))
    assert err.total == 1
    assert "masks/001.png is 8x5" in err.problems[0] and "images/001.png is 8x6" in err.problems[0]


def test_16bit_mask_with_unknown_ids(tmp_path):
    root = _write_dataset(tmp_path / "d")
    ids = np.zeros((6, 8), np.uint16)
    ids[0, :3] = [1, 300, 4000]
    Image.fromarray(ids).save(root / "masks/003.png")
    err = _problems(open_dataset(root))
    assert err.total == 1
    assert "masks/003.png has region ids 300, 4000 that regions.json does not define (defined: 0, 1, 2)" \
        in err.problems[0]
    assert err.problems[0].startswith("manifest.csv line 5")


def test_rgb_mask_is_a_validation_problem(tmp_path):
    root = _write_dataset(tmp_path / "d")
    colours = np.zeros((6, 8, 3), np.uint8)
    colours[..., 0] = 255
    Image.fromarray(colours).save(root / "masks/000.png")
    err = _problems(open_dataset(root))
    assert "masks must be single-channel label maps" in err.problems[0]


def test_labels_outside_the_model_classes(tmp_path):
    ds = open_dataset(_write_dataset(tmp_path / "d"))
    err = _problems(ds, classes=["cat", "bird"])
    assert err.total == 1
    assert err.problems[0] == ("manifest.csv line 2: label 'dog' (2 row(s)) is not one of the model's classes "
                               "['cat', 'bird']; fix the label or the model card's classes")


def test_at_most_ten_problems_listed_with_the_total(tmp_path):
    rows = "\n".join(f"missing/{i}.png,a" for i in range(25))
    root = _write_dataset(tmp_path / "d", n=1, regions=None, manifest=f"image,label\n{rows}\n")
    err = _problems(open_dataset(root))
    assert err.total == 25 and len(err.problems) == 10
    assert "has 25 problem(s)" in str(err) and "and 15 more" in str(err)


def test_undecodable_image_is_left_to_the_runner(tmp_path):
    root = _write_dataset(tmp_path / "d", n=2)
    data = (root / "images/000.png").read_bytes()
    (root / "images/000.png").write_bytes(data[: len(data) // 2])
    ds = open_dataset(root)
    ds.validate()  # the header is readable: the run skips this image with the reason
    with pytest.raises(ImageError, match="truncated PNG"):
        ds.load(ds.items[0])
    (root / "images/000.png").write_bytes(b"")
    (root / "images/001.png").write_text("not an image")
    err = _problems(open_dataset(root))
    assert "none of the 2 images can be read" in err.problems[0]


def test_sha256_follows_content(tmp_path):
    root = _write_dataset(tmp_path / "d")
    first = open_dataset(root).sha256
    assert first == open_dataset(root).sha256 and len(first) == 64
    copy = shutil.copytree(root, tmp_path / "copy")
    assert open_dataset(copy).sha256 == first  # the content, not the location
    data = bytearray((root / "masks/001.png").read_bytes())
    Image.fromarray(np.ones((6, 8), np.uint8)).save(root / "masks/001.png")
    assert open_dataset(root).sha256 != first
    (root / "masks/001.png").write_bytes(bytes(data))
    assert open_dataset(root).sha256 == first
    (root / "regions.json").write_text(json.dumps(REGIONS) + " ")
    assert open_dataset(root).sha256 != first


# -- manifest and regions.json parsing -------------------------------------------------------------------
def test_manifest_header_rules():
    m = parse_manifest("\ufeffImage , LABEL,Mask,site\r\na.png, cat ,m.png,x\r\n\r\nimages\\b.png,dog,m2.png,y\r\n")
    assert m.columns == ("image", "label", "mask", "site") and m.attributes == ("site",) and m.has_masks
    assert [(line, item.image, item.label) for line, item in m.rows] == [(2, "a.png", "cat"), (4, "images/b.png", "dog")]


@pytest.mark.parametrize("text, message", [
    ("", "manifest.csv is empty"),
    ("\n\n", "manifest.csv is empty"),
    ("image,label\n", "has a header but no rows"),
    ("image,lable\na.png,x\n", r"missing column\(s\) label \(found: image, lable\)"),
    ("path,label\na.png,x\n", r"missing column\(s\) image"),
    ("image,label,\na.png,x,\n", "empty column name"),
    ("image,label,label\na.png,x,y\n", "column 'label' appears twice"),
    ("image,label\na.png,cat\nb.png,\n", "line 3: 'b.png' has an empty label"),
    ("image,label\na.png,cat\n./a.png,dog\n", "line 3: './a.png' is already listed on line 2"),
    ("image,label\na.png,cat,extra\n", "line 2: 3 fields but the header has 2"),
    ("image,label\n,cat\n", "line 2: empty image path"),
    ("image,label,mask\na.png,cat,\n", "line 2: 'a.png' has no mask"),
    (b"image,label\n\xff\xfe.png,cat\n", "not UTF-8"),
    ('image,label\n"a.png,cat\n', None),  # unterminated quote: one odd field, still a DatasetError
])
def test_manifest_errors(text, message):
    with pytest.raises(DatasetError, match=message):
        parse_manifest(text)


def test_manifest_row_problems_are_reported_together():
    with pytest.raises(DatasetError) as info:
        parse_manifest("image,label\na.png,\nb.png,\nc.png,ok\nc.png,ok\n")
    assert info.value.total == 3


def test_masks_without_regions_json(tmp_path):
    root = _write_dataset(tmp_path / "d", regions=None)
    with pytest.raises(DatasetError, match="mask column but there is no regions.json"):
        open_dataset(root)


@pytest.mark.parametrize("doc, message", [
    ("{not json", "not valid JSON"),
    ("[]", 'no "regions" object'),
    ('{"regions": []}', 'no "regions" object'),
    ('{"regions": {}}', "defines no regions"),
    ('{"regions": {"-1": {"name": "x"}}}', "region id '-1' is not a whole number"),
    ('{"regions": {"one": {"name": "x"}}}', "region id 'one' is not a whole number"),
    ('{"regions": {"1": {"name": "x"}, "01": {"name": "y"}}}', "region id '01' repeats id 1"),
    ('{"regions": {"1": {"name": "x"}, "1": {"name": "y"}}}', "key '1' appears twice"),
    ('{"regions": {"1": {"name": ""}}}', 'needs a non-empty "name"'),
    ('{"regions": {"1": "cat"}}', 'needs a non-empty "name"'),
    ('{"regions": {"1": {"name": "cat", "role": "Core"}}}', "has role 'Core'; use \"core\""),
    ('{"regions": {"1": {"name": "a"}, "2": {"name": "a"}}}', "region name 'a' is used by ids 1 and 2"),
])
def test_regions_json_schema(doc, message):
    with pytest.raises(DatasetError, match=message):
        parse_regions(doc)


def test_regions_json_valid():
    regions = parse_regions(json.dumps({"regions": {"0": {"name": " bg "}, "7": {"name": "dog", "role": "core",
                                                                                  "colour": "#f00"}}}))
    assert regions == {0: Region(0, "bg"), 7: Region(7, "dog", "core")}


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(
    st.lists(st.sampled_from(list('ab,"\n\r\\/. \x00\ufeff') + ["image", "label", "mask", ".."]),
             max_size=40).map("".join),
    st.text(max_size=80),
    st.lists(st.lists(st.text(max_size=6), max_size=4), max_size=5).map(
        lambda rows: "image,label,mask\n" + "\n".join(",".join(r) for r in rows)),
))
def test_manifest_parser_raises_only_dataset_error(text):
    try:
        manifest = parse_manifest(text)
    except DatasetError:
        return
    assert manifest.rows and all(item.label and item.image for _, item in manifest.rows)
    assert [item.image_id for _, item in manifest.rows] == list(range(len(manifest.rows)))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=80))
def test_manifest_parser_on_arbitrary_bytes(data):
    try:
        parse_manifest(data)
    except DatasetError:
        pass
