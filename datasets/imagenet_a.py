"""ImageNetA (test-only): ``imagenet-adversarial/imagenet-a/<wnid>/`` (200 folders, label = sorted
index, ``README.txt`` ignored) + ``classnames.txt`` (§2.7)."""
from engine.data import DATASET_REGISTRY

from .imagenet_sketch import ImageNetSketch


@DATASET_REGISTRY.register()
class ImageNetA(ImageNetSketch):
    folder = "imagenet-adversarial"
    image_subdir = "imagenet-a"
