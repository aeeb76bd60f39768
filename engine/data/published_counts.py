"""Dataset sizes published with CoOp's split files (CoOp's DATASETS.md / paper Table), per registered name.

``PUBLISHED[name] = Counts(classes, train, val, test)``; ``None`` = no such split (ImageNet has no
separate val: ours is its 50,000-image val folder, also used as test; the four ImageNet variants are
test-only). ImageNet's train count is the exact ILSVRC-2012 figure behind the published "1.28 M".
``tools/prepare_data.py verify`` compares a dataset as built against these numbers.
"""
from typing import NamedTuple, Optional


class Counts(NamedTuple):
    classes: int
    train: Optional[int]
    val: Optional[int]
    test: Optional[int]


PUBLISHED = {
    "ImageNet": Counts(1000, 1_281_167, None, 50_000),
    "Caltech101": Counts(100, 4_128, 1_649, 2_465),
    "OxfordPets": Counts(37, 2_944, 736, 3_669),
    "StanfordCars": Counts(196, 6_509, 1_635, 8_041),
    "OxfordFlowers": Counts(102, 4_093, 1_633, 2_463),
    "Food101": Counts(101, 50_500, 20_200, 30_300),
    "FGVCAircraft": Counts(100, 3_334, 3_333, 3_333),
    "SUN397": Counts(397, 15_880, 3_970, 19_850),
    "DescribableTextures": Counts(47, 2_820, 1_128, 1_692),
    "EuroSAT": Counts(10, 13_500, 5_400, 8_100),
    "UCF101": Counts(101, 7_639, 1_898, 3_783),
    "ImageNetV2": Counts(1000, None, None, 10_000),
    "ImageNetSketch": Counts(1000, None, None, 50_889),
    "ImageNetA": Counts(200, None, None, 7_500),
    "ImageNetR": Counts(200, None, None, 30_000),
}
