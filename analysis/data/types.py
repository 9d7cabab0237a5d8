"""The types every dataset reader shares: a region, an item (one image with its label), the dataset error.

Their own module so that each format's reader (`datasets` for manifest / ImageFolder, `detection_data` for
COCO) imports them without importing the other reader.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from explainers.errors import InputError

MAX_LISTED_PROBLEMS = 10


class DatasetError(InputError):
    """One or more problems with a dataset; `problems` holds at most ten, `total` counts them all."""

    def __init__(self, summary: str, problems: list[str] | tuple[str, ...] = (), total: int | None = None):
        self.summary = summary
        self.problems = list(problems)[:MAX_LISTED_PROBLEMS]
        self.total = len(problems) if total is None else total
        lines = [summary] + [f"  - {p}" for p in self.problems]
        if self.total > len(self.problems):
            lines.append(f"  ... and {self.total - len(self.problems)} more")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Region:
    id: int
    name: str
    role: str | None = None  # "core": what the label is about; every other region is a shortcut candidate


@dataclass(frozen=True)
class Item:
    image_id: int
    image: str  # path relative to the dataset root, "/"-separated
    label: str
    mask: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)  # subgroup columns; treat as read-only
    target: str | None = None  # segmentation: the class-index map (PNG) of this image
