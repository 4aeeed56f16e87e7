"""Class names and label-id mappings of the supported datasets (no torch here).

Every dataset is trained on contiguous *train ids* ``0..N-1`` with :data:`IGNORE_INDEX`
(255) for pixels that count nowhere. A dataset whose label files hold other ids has a
lookup table (:func:`label_lut`) from the stored id to the train id:

- **cityscapes**: ``*_gtFine_labelIds.png`` holds the 34 raw label ids; the 19 evaluated
  classes map to train ids as in the official ``cityscapesscripts/helpers/labels.py``
  (7 road -> 0 ... 33 bicycle -> 18); every other id (including ``ignoreInEval`` classes such
  as parking, rail track, caravan) maps to 255.
- **ade20k**: the 150 SceneParsing classes stored as 1..150 with 0 for "other";
  *reduce-zero-label* maps 0 -> 255 and ``k`` -> ``k - 1``.
- **voc**: Pascal VOC's 21 classes (background first) stored as train ids; 255 is the void
  border.
- **synthetic**: ``N`` classes stored as train ids; class 0 is the textured background.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seglab.recipes import DataConfig

IGNORE_INDEX = 255
"""The train id of pixels excluded from the loss and from every metric count."""

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

# Raw Cityscapes label id -> train id, for the 19 evaluated classes (cityscapesscripts'
# labels.py); ids 0-33 missing here (and -1, license plate) are ignored in training and eval.
CITYSCAPES_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
CITYSCAPES_NUM_LABEL_IDS = 34
"""Raw label ids 0..33 are valid in ``*_labelIds.png`` files."""

ADE20K_CLASSES: tuple[str, ...] = (
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television receiver",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
)

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

DEFAULT_SYNTHETIC_CLASSES = 4
"""Class count of the synthetic dataset when the recipe has no ``data.synthetic`` block."""


def synthetic_classes(count: int) -> tuple[str, ...]:
    """Names of the synthetic dataset's classes: the background, then one per shape class."""
    if count < 2:
        raise ValueError(f"the synthetic dataset needs at least 2 classes, got {count}")
    return ("background", *(f"shape_{i}" for i in range(1, count)))


def class_names(data: DataConfig) -> tuple[str, ...]:
    """The train-id-ordered class names of the recipe's dataset."""
    if data.dataset == "cityscapes":
        return CITYSCAPES_CLASSES
    if data.dataset == "ade20k":
        return ADE20K_CLASSES
    if data.dataset == "voc":
        return VOC_CLASSES
    count = data.synthetic.num_classes if data.synthetic else DEFAULT_SYNTHETIC_CLASSES
    return synthetic_classes(count)


def num_classes(data: DataConfig) -> int:
    """How many classes the model for the recipe's dataset predicts."""
    return len(class_names(data))


def cityscapes_lut() -> list[int]:
    """A 256-entry table from raw Cityscapes label id to train id (255 where ignored)."""
    table = [IGNORE_INDEX] * 256
    for raw, train in CITYSCAPES_ID_TO_TRAIN_ID.items():
        table[raw] = train
    return table


def ade20k_lut() -> list[int]:
    """A 256-entry table for reduce-zero-label: 0 -> 255, 1..150 -> 0..149, rest 255."""
    table = [IGNORE_INDEX] * 256
    for stored in range(1, len(ADE20K_CLASSES) + 1):
        table[stored] = stored - 1
    return table


def label_lut(dataset: str) -> list[int] | None:
    """The stored-id -> train-id table of `dataset`, or None where ids are train ids."""
    if dataset == "cityscapes":
        return cityscapes_lut()
    if dataset == "ade20k":
        return ade20k_lut()
    if dataset in ("voc", "synthetic"):
        return None
    raise ValueError(f"unknown dataset {dataset!r}; known: cityscapes, ade20k, voc, synthetic")
