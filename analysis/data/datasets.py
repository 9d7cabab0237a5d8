"""Users' datasets (docs/FORMATS.md): a folder with manifest.csv, a .zip of one, or an ImageFolder tree.

Opening a dataset only parses its description (manifest, regions.json, folder listing); `validate()` then
checks everything a run relies on before any compute, and reports up to ten problems at once, each with
the file and the fix, so a user fixes a dataset in one round instead of ten. Every path a manifest names is
untrusted: it must stay inside the dataset folder after symlinks are resolved, checked again on `load`.

Decisions (why):
- Manifest cells are stripped of surrounding spaces, and `\\` in paths counts as `/` (spreadsheets on
  Windows); the columns image, label and mask are matched case-insensitively.
- When a mask column exists every row needs a mask: a half-masked dataset would silently skew region
  shares towards the masked images.
- An image whose pixels cannot be decoded is not a validation problem: the runner skips it and the report
  lists it under "skipped" with the reason. Masks are the user's own annotations, so a broken mask is one.
- Image ids are row order (ImageFolder: class folders sorted, then paths sorted).
- Multi-label: `label` holds the image's tags joined by `|` (empty: no tag), so the manifest keeps one row
  per image; an empty label is therefore parsed, and refused by `validate(classes, task="classification")`.
- Segmentation: the `target` column names a PNG class-index map (same size as the image, 255 = ignore), read
  like a mask; `validate(classes, task="segmentation")` checks every value is a class index or 255.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from analysis.data.archive import entry_parts, safe_extract
from analysis.data.detection_data import is_detection_folder, open_detection_dataset
from analysis.data.layouts import folder_layout
from analysis.data.voc_data import open_voc_dataset
from analysis.data.yolo_data import open_yolo_dataset
from analysis.data.images import ImageError, MaskError, image_header, read_image_and_orientation, read_mask
from analysis.data.types import MAX_LISTED_PROBLEMS, DatasetError, Item, Region  # noqa: F401 (the readers' types)
from explainers.errors import InputError
from explainers.loading.model_files import file_sha256
from explainers.loading.model_tasks import MODEL_TASKS

MANIFEST = "manifest.csv"
REGIONS = "regions.json"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
ROLES = ("core",)
TAG_SEPARATOR = "|"
IGNORE_INDEX = 255  # segmentation target maps: pixels no class is scored on
SPECIAL_COLUMNS = ("image", "label", "mask", "target")
MAX_DESCRIPTION_BYTES = 256 * (1 << 20)  # manifest.csv / regions.json read into memory
_IGNORED_NAMES = ("__MACOSX", "Thumbs.db", "desktop.ini")
_REGION_ID = re.compile(r"^[0-9]+$")


def split_tags(label: str) -> tuple[str, ...]:
    """A multi-label manifest cell's tags: `"boat|car"` -> ("boat", "car"); "" -> () (no tag)."""
    return tuple(t.strip() for t in label.split(TAG_SEPARATOR)) if label.strip() else ()


@dataclass(frozen=True)
class Manifest:
    columns: tuple[str, ...]
    attributes: tuple[str, ...]
    has_masks: bool
    rows: tuple[tuple[int, Item], ...]  # (line number in the file, item)
    has_targets: bool = False


class Dataset:
    """A parsed dataset. Cheap to create; `validate()` and `sha256` read the files."""

    hash_file = staticmethod(file_sha256)  # the workspace swaps in its cache by (path, size, mtime)

    def __init__(self, root: Path, name: str, items, regions: dict[int, Region], attributes=(),
                 *, has_masks: bool = False, manifest: Path | None = None, lines=None, has_targets: bool = False):
        self.root = Path(root)
        self.name = name
        self.items: tuple[Item, ...] = tuple(items)
        self.regions = dict(regions)
        self.attributes: tuple[str, ...] = tuple(attributes)
        self.has_masks = has_masks
        self.has_targets = has_targets
        self.manifest = manifest
        self._lines = dict(lines or {})  # image_id -> manifest line, for messages
        self.shown_as = str(self.root)  # how messages name the dataset: the user's path, not a workspace copy

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {len(self.items)} items, {len(self.classes)} classes, root={str(self.root)!r})"

    @cached_property
    def classes(self) -> tuple[str, ...]:
        return tuple(sorted({item.label for item in self.items}))

    def image_path(self, item: Item) -> Path:
        return self._resolve(item.image, self._where(item))

    def mask_path(self, item: Item) -> Path | None:
        return None if item.mask is None else self._resolve(item.mask, self._where(item))

    def target_path(self, item: Item) -> Path | None:
        return None if item.target is None else self._resolve(item.target, self._where(item))

    def load_target(self, item: Item) -> np.ndarray | None:
        """The segmentation class map (int32, oriented like the image; 255 = ignore), or None."""
        path = self.target_path(item)
        if path is None:
            return None
        image_path = self.image_path(item)
        size, orientation = image_header(image_path)
        return read_mask(path, size, orientation, image_path=image_path)

    def load(self, item: Item) -> tuple[Image.Image, np.ndarray | None]:
        """(RGB image with EXIF orientation applied, int32 mask oriented the same way or None).

        Raises `ImageError` for an undecodable image (the runner skips it) and `MaskError` for a bad mask.
        """
        image_path = self.image_path(item)
        image, orientation = read_image_and_orientation(image_path)
        mask_path = self.mask_path(item)
        if mask_path is None:
            return image, None
        return image, read_mask(mask_path, image.size, orientation, image_path=image_path)

    def validate(self, classes=None, task: str = "classification") -> None:
        """Check every file, mask, target map and label before any compute; raise `DatasetError` listing
        problems. `task` (the model card's) says how labels are read; classes None: no label checks."""
        problems: list[str] = []
        labels = MODEL_TASKS[task].labels  # "class", "tags" or "class_map"
        if labels == "class_map" and not self.has_targets:
            problems.append(f"{MANIFEST} has no 'target' column; a segmentation audit needs one class-index map "
                            f"(PNG, same size as the image, pixel value = class index, {IGNORE_INDEX} = ignore) "
                            "per image: add the column image,label,target")
        readable, first_unreadable = 0, None
        for item in self.items:
            where = self._where(item)
            image_path = self._checked_path(item.image, where, "image", problems)
            mask_path = None if item.mask is None else self._checked_path(item.mask, where, "mask", problems)
            if image_path is None:
                continue
            try:
                size, orientation = image_header(image_path)
                readable += 1
            except ImageError as exc:
                first_unreadable = first_unreadable or str(exc)
                continue
            if mask_path is not None:
                self._check_mask(mask_path, image_path, size, orientation, where, problems)
            target_path = None if item.target is None else self._checked_path(item.target, where, "target", problems)
            if target_path is not None and classes is not None:
                self._check_target(target_path, image_path, size, orientation, where, len(classes), problems)
        if self.items and readable == 0 and first_unreadable is not None:
            problems.append(f"none of the {len(self.items)} images can be read (first: {first_unreadable}); "
                            "check that the files are PNG or JPEG images")
        if classes is not None and labels == "tags":
            problems.extend(self._tag_problems(classes))
        elif classes is not None and labels != "class_map":
            problems.extend(self._label_problems(classes))
        if problems:
            raise DatasetError(f"dataset {self.shown_as} has {len(problems)} problem(s); fix them and retry:",
                               problems)

    def unreadable_images(self) -> list[dict]:
        """`[{"image", "reason"}]` for every image (or mask) that does not decode fully: what a run would skip.

        `validate` reads headers only (cheap, and enough to refuse a broken dataset); a truncated PNG or a
        mask that fails to decode passes it, so registration decodes each image once to say at upload time,
        not in the report, which images will be skipped and why."""
        out = []
        for item in self.items:
            try:
                image, _ = self.load(item)
                image.load()
            except Exception as exc:  # the runner's own rule: any failure to decode skips that image
                out.append({"image": str(item.image), "reason": getattr(exc, "reason", None) or str(exc)
                            or type(exc).__name__})
        return out

    @cached_property
    def sha256(self) -> str:
        """Content hash of the description files and every listed file (folder or zip give the same)."""
        h = hashlib.sha256(b"saliency-audit dataset v1\0")
        if self.manifest is not None:
            h.update(b"manifest\0" + self.hash_file(self.manifest).encode())
        else:
            listing = "".join(f"{item.image}\0{item.label}\n" for item in self.items)
            h.update(b"listing\0" + hashlib.sha256(listing.encode()).hexdigest().encode())
        regions_file = self.root / REGIONS
        if regions_file.is_file():
            h.update(b"regions\0" + self.hash_file(regions_file).encode())
        paths = sorted({p for item in self.items for p in (item.image, item.mask, item.target) if p is not None})
        for rel in paths:
            try:
                digest = self.hash_file(self._resolve(rel, rel))
            except OSError as exc:
                raise DatasetError(f"{self.shown_as}: cannot read {rel!r} ({exc.strerror or exc}); run validate()") from None
            h.update(rel.encode() + b"\0" + digest.encode() + b"\n")
        return h.hexdigest()

    # -- helpers ---------------------------------------------------------------------------------------
    def _where(self, item: Item) -> str:
        line = self._lines.get(item.image_id)
        return f"{MANIFEST} line {line}" if line is not None else item.image

    def _resolve(self, rel: str, where: str) -> Path:
        """The file's real path, refusing anything that leaves the dataset folder.

        `Path.resolve` costs an lstat per component of the whole absolute path (18 s of a 10,000-image
        registration): folders are resolved once per dataset object, then only the file's own name is
        checked for a symlink (one lstat), which gives the same path as resolving it whole."""
        parts = entry_parts(rel)
        if not parts:
            raise DatasetError(f"{where}: path {rel!r} must be relative to the dataset folder, without "
                               "'..' or a drive letter")
        try:
            folder, inside = self._real_folder(parts[:-1])
            path = folder + os.sep + parts[-1]
            if os.path.islink(path):
                path = str(Path(path).resolve())  # raises on a symlink loop, as before
                root = self._real_folder(())[0]
                inside = path.startswith(root + os.sep)
        except (OSError, RuntimeError, ValueError) as exc:  # symlink loop, name too long
            raise DatasetError(f"{where}: cannot resolve {rel!r} ({exc}); fix the path") from None
        if not inside:
            raise DatasetError(f"{where}: {rel!r} points outside the dataset folder {self._real_folder(())[0]} "
                               "(through a symlink?); copy the file into the folder")
        return Path(path)

    def _real_folder(self, parts: tuple[str, ...]) -> tuple[str, bool]:
        """(`(root / parts).resolve()` as a string, whether it is inside the real root), memoised per dataset
        object (a run opens its own)."""
        memo = self.__dict__.setdefault("_real_folders", {})
        if parts not in memo:
            root = memo[()][0] if () in memo else str(self.root.resolve())
            folder = str(self.root.joinpath(*parts).resolve())
            memo[parts] = (folder, folder == root or folder.startswith(root + os.sep))
        return memo[parts]

    def _checked_path(self, rel: str, where: str, what: str, problems: list[str]) -> Path | None:
        try:
            path = self._resolve(rel, where)
        except DatasetError as exc:
            problems.append(exc.summary)
            return None
        try:
            is_file = path.is_file()
        except (OSError, ValueError):
            is_file = False
        if not is_file:
            problems.append(f"{where}: {what} file {rel!r} not found in {self.shown_as}; fix the path or add the file")
            return None
        return path

    def _check_mask(self, mask_path, image_path, size, orientation, where, problems) -> None:
        try:
            ids = read_mask(mask_path, size, orientation, image_path=image_path)
        except MaskError as exc:
            problems.append(f"{where}: {exc}")
            return
        unknown = [int(v) for v in _present_values(ids) if int(v) not in self.regions]
        if unknown:
            shown = ", ".join(map(str, unknown[:8])) + (", ..." if len(unknown) > 8 else "")
            known = ", ".join(map(str, sorted(self.regions))) or "none"
            problems.append(f"{where}: mask {mask_path} has region ids {shown} that {REGIONS} does not define "
                            f"(defined: {known}); add them to {REGIONS} or fix the mask")

    def _check_target(self, path, image_path, size, orientation, where, n_classes: int, problems) -> None:
        try:
            values = _present_values(read_mask(path, size, orientation, image_path=image_path))
        except MaskError as exc:
            problems.append(f"{where}: target {str(exc).replace('mask ', '', 1)}")
            return
        bad = [int(v) for v in values if not (0 <= int(v) < n_classes or int(v) == IGNORE_INDEX)]
        if bad:
            shown = ", ".join(map(str, bad[:8])) + (", ..." if len(bad) > 8 else "")
            problems.append(f"{where}: target map {path} has values {shown}, but the model has {n_classes} classes "
                            f"(0..{n_classes - 1}) and {IGNORE_INDEX} means ignore; fix the map or the card's classes")

    def _tag_problems(self, classes) -> list[str]:
        known = set(classes)
        unknown: dict[str, list[Item]] = {}
        problems = []
        for item in self.items:
            tags = split_tags(item.label)
            if "" in tags:
                problems.append(f"{self._where(item)}: tags {item.label!r} have an empty tag; join tags with a "
                                f"single '{TAG_SEPARATOR}' (e.g. 'boat|car'), or leave the label empty for no tag")
            for tag in tags:
                if tag and tag not in known:
                    unknown.setdefault(tag, []).append(item)
        shown = ", ".join(map(repr, list(classes)[:20])) + (", ..." if len(classes) > 20 else "")
        return problems + [f"{self._where(items[0])}: tag {tag!r} ({len(items)} row(s)) is not one of the model's "
                           f"tags [{shown}]; fix the manifest's label column (tags joined by "
                           f"'{TAG_SEPARATOR}') or the model card's classes" for tag, items in unknown.items()]

    def _label_problems(self, classes) -> list[str]:
        known = set(classes)
        unknown: dict[str, list[Item]] = {}
        problems = [f"{self._where(item)}: {item.image!r} has an empty label; fill it in or delete the row"
                    for item in self.items if not item.label]
        for item in self.items:
            if not item.label:
                continue
            if item.label not in known:
                unknown.setdefault(item.label, []).append(item)
        shown = ", ".join(map(repr, list(classes)[:20])) + (", ..." if len(classes) > 20 else "")
        return problems + [f"{self._where(items[0])}: label {label!r} ({len(items)} row(s)) is not one of the "
                           f"model's classes [{shown}]; fix the label or the model card's classes"
                           for label, items in unknown.items()]


def open_dataset(path: str | os.PathLike, *, workdir: str | os.PathLike | None = None) -> Dataset:
    """Open a dataset folder, a .zip of one (extracted safely under `workdir`), or an ImageFolder tree.

    Pass `workdir` (e.g. the workspace) to reuse an earlier extraction of the same zip; without it a new
    temporary folder is used and left for the caller.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: not found; give a dataset folder (manifest.csv or class folders) or a .zip")
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise DatasetError(f"{path}: not a folder or a .zip; give a dataset folder (manifest.csv or class "
                               "folders) or a .zip of one")
        root = _unwrap(_extract(path, workdir))
        name = path.stem
    else:
        root = path
        name = path.resolve().name
    from analysis.data.hf_folder import is_hf_folder, to_manifest_folder

    if is_hf_folder(root):  # datasets' save_to_disk: written out once into the manifest layout
        root = to_manifest_folder(root, Path(workdir) if workdir is not None else None)
    manifest = root / MANIFEST
    if manifest.is_file():
        return _from_manifest(root, name, manifest)
    layout = folder_layout(root)  # detection layouts: COCO, Ultralytics YOLO, Pascal VOC
    if layout == "coco":
        return open_detection_dataset(root, name)
    if layout == "yolo":
        return open_yolo_dataset(root, name)
    if layout == "voc":
        return open_voc_dataset(root, name)
    return _from_image_folder(root, name)


def parse_manifest(data: bytes | str, where: str = MANIFEST) -> Manifest:
    """Parse manifest.csv text; raises only `DatasetError` (listing row problems together)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{where} is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV") from None
    elif data.startswith("\ufeff"):
        data = data[1:]
    reader = csv.reader(io.StringIO(data, newline=""))
    try:
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
        if header is None:
            raise DatasetError(f"{where} is empty; its first line must be the header 'image,label[,mask][,...]'")
        columns = _columns(header, where)
        rows = _manifest_rows(reader, columns, where)
    except csv.Error as exc:
        raise DatasetError(f"{where} line {reader.line_num}: not valid CSV ({exc})") from None
    attributes = tuple(c for c in columns if c not in SPECIAL_COLUMNS)
    return Manifest(columns, attributes, "mask" in columns, rows, "target" in columns)


def parse_regions(data: bytes | str, where: str = REGIONS) -> dict[int, Region]:
    """Parse regions.json: {"regions": {"<id>": {"name": ..., "role": "core"?}}}; only `DatasetError`."""
    fix = 'expected {"regions": {"0": {"name": "background"}, "1": {"name": "cat", "role": "core"}}}'
    try:
        doc = json.loads(data, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as exc:
        raise DatasetError(f"{where}: key {exc.args[0]!r} appears twice; {fix}") from None
    except (ValueError, RecursionError) as exc:
        raise DatasetError(f"{where} is not valid JSON ({exc}); {fix}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("regions"), dict):
        raise DatasetError(f"{where}: no \"regions\" object; {fix}")
    problems, regions, names = [], {}, {}
    for key, spec in doc["regions"].items():
        if not _REGION_ID.match(key) or int(key) > 2**31 - 1:
            problems.append(f"{where}: region id {key!r} is not a whole number >= 0 (the mask pixel value)")
            continue
        rid = int(key)
        if rid in regions:
            problems.append(f"{where}: region id {key!r} repeats id {rid}")
            continue
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"].strip():
            problems.append(f"{where}: region {key} needs a non-empty \"name\" string")
            continue
        name, role = spec["name"].strip(), spec.get("role")
        if role is not None and role not in ROLES:
            problems.append(f"{where}: region {key} ({name!r}) has role {role!r}; use \"core\" or leave it out")
            continue
        if name in names:
            problems.append(f"{where}: region name {name!r} is used by ids {names[name]} and {rid}; names must be unique")
            continue
        names[name] = rid
        regions[rid] = Region(rid, name, role)
    if problems:
        raise DatasetError(f"{where} has {len(problems)} problem(s):", problems)
    if not regions:
        raise DatasetError(f"{where} defines no regions; {fix}")
    return regions


# -- opening ---------------------------------------------------------------------------------------------
def _from_manifest(root: Path, name: str, manifest_path: Path) -> Dataset:
    manifest = parse_manifest(_read_description(manifest_path), MANIFEST)
    regions: dict[int, Region] = {}
    regions_path = root / REGIONS
    if manifest.has_masks:
        if not regions_path.is_file():
            raise DatasetError(f"{root}: {MANIFEST} has a mask column but there is no {REGIONS}; add one "
                               'naming each mask value, e.g. {"regions": {"0": {"name": "background"}, '
                               '"1": {"name": "cat", "role": "core"}}}')
        regions = parse_regions(_read_description(regions_path), REGIONS)
    items = [item for _, item in manifest.rows]
    lines = {item.image_id: line for line, item in manifest.rows}
    return Dataset(root, name, items, regions, manifest.attributes, has_masks=manifest.has_masks,
                   manifest=manifest_path, lines=lines, has_targets=manifest.has_targets)


def _from_image_folder(root: Path, name: str) -> Dataset:
    items = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and _visible(p.name)):
        files = []
        for folder, dirs, names in os.walk(class_dir):
            dirs[:] = sorted(d for d in dirs if _visible(d))
            files += [Path(folder, n) for n in names if _visible(n) and n.lower().endswith(IMAGE_EXTENSIONS)]
        for file in sorted(files):
            items.append(Item(len(items), file.relative_to(root).as_posix(), class_dir.name))
    if not items:
        raise DatasetError(f"{root}: no {MANIFEST} and no class folders with images; give a folder with "
                           f"{MANIFEST} (image,label[,mask]) or an ImageFolder tree (class_name/*.png|jpg)")
    return Dataset(root, name, items, {})


def _extract(zip_path: Path, workdir) -> Path:
    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="saliency-audit-data-"))
    target = f"{zip_path.stem}-{file_sha256(zip_path)[:16]}"
    if (workdir / target).is_dir():  # renamed into place only after a complete extraction
        return workdir / target
    try:
        return safe_extract(zip_path, workdir, name=target)
    except FileExistsError:  # another process finished the same extraction first
        return workdir / target
    except OSError as exc:
        raise DatasetError(f"{zip_path}: cannot extract into {workdir} ({exc})") from None


def _unwrap(root: Path) -> Path:
    """The dataset root inside an extracted zip that holds one top folder."""
    if (root / MANIFEST).is_file() or is_detection_folder(root):
        return root
    entries = [p for p in root.iterdir() if _visible(p.name)]
    if len(entries) == 1 and entries[0].is_dir():
        inner = entries[0]
        inner_entries = [p for p in inner.iterdir() if _visible(p.name)]
        if (inner / MANIFEST).is_file() or is_detection_folder(inner) or (inner_entries and all(p.is_dir() for p in inner_entries)):
            return inner
    return root


def _visible(name: str) -> bool:
    return not name.startswith(".") and name not in _IGNORED_NAMES


# -- parsing ---------------------------------------------------------------------------------------------
def _columns(header: list[str], where: str) -> tuple[str, ...]:
    columns = []
    for cell in header:
        name = cell.strip()
        if name.lower() in SPECIAL_COLUMNS:
            name = name.lower()
        if not name:
            raise DatasetError(f"{where} line 1: the header has an empty column name; name every column")
        if name in columns:
            raise DatasetError(f"{where} line 1: column {name!r} appears twice; column names must be unique")
        columns.append(name)
    missing = [c for c in ("image", "label") if c not in columns and not (c == "label" and "target" in columns)]
    if missing:
        raise DatasetError(f"{where}: missing column(s) {', '.join(missing)} (found: {', '.join(columns)}); "
                           "the header must be 'image,label[,mask][,attributes...]'")
    return tuple(columns)


def _manifest_rows(reader, columns, where) -> tuple[tuple[int, Item], ...]:
    problems, rows, seen = [], [], {}
    for row in reader:
        line = reader.line_num
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if len(cells) != len(columns):
            problems.append(f"{where} line {line}: {len(cells)} fields but the header has {len(columns)}; "
                            "quote fields that contain commas")
            continue
        record = dict(zip(columns, cells))
        image = record["image"].replace("\\", "/")
        mask = record.get("mask", "").replace("\\", "/") or None
        target = record.get("target", "").replace("\\", "/") or None
        if not image:
            problems.append(f"{where} line {line}: empty image path; fill it in or delete the row")
            continue
        if "target" in columns and target is None:
            problems.append(f"{where} line {line}: {image!r} has no target map; every row needs one when the "
                            "target column exists")
            continue
        if "mask" in columns and mask is None:
            problems.append(f"{where} line {line}: {image!r} has no mask; every row needs one when the "
                            "mask column exists")
            continue
        key = "/".join(entry_parts(image) or (image,))
        if key in seen:
            problems.append(f"{where} line {line}: {image!r} is already listed on line {seen[key]}; "
                            "list each image once")
            continue
        seen[key] = line
        attributes = {c: record[c] for c in columns if c not in SPECIAL_COLUMNS}
        rows.append((line, Item(len(rows), image, record.get("label", ""), mask, attributes, target)))
    if problems:
        raise DatasetError(f"{where} has {len(problems)} problem(s):", problems)
    if not rows:
        raise DatasetError(f"{where} has a header but no rows; add one line per image: image,label[,mask]")
    return tuple(rows)


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _read_description(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_DESCRIPTION_BYTES:
        raise DatasetError(f"{path}: {size:,} bytes is too large for a dataset description")
    return path.read_bytes()


def _present_values(ids: np.ndarray) -> np.ndarray:
    if ids.size == 0:
        return ids.ravel()
    low, high = int(ids.min()), int(ids.max())
    if low >= 0 and high < (1 << 16):
        return np.flatnonzero(np.bincount(ids.ravel(), minlength=high + 1))
    return np.unique(ids)


