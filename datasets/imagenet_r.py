"""ImageNetR (test-only): ``imagenet-rendition/imagenet-r/<wnid>/`` (200 folders, label = sorted
index, ``README.txt`` ignored) + ``classnames.txt`` (§2.7)."""
from engine.data import DATASET_REGISTRY

from .imagenet_sketch import ImageNetSketch


@DATASET_REGISTRY.register()
class ImageNetR(ImageNetSketch):
    folder = "imagenet-rendition"
    image_subdir = "imagenet-r"
