"""Image checks: one bulk existence pass before training, and a reader that names the bad file.

The content check before training (``DATALOADER.CHECK_IMAGES``) is ``engine.data.image_scan``.
"""
import os

from PIL import Image

from .base_dataset import DatasetError
from .image_modes import to_rgb


class BadImageError(DatasetError):
    """An image file exists but cannot be decoded; one line naming it (also when re-raised from a loader
    worker, whose traceback torch folds into the message: only its last line is kept)."""

    def __init__(self, msg=""):
        msg = str(msg)
        if "\nOriginal Traceback" in msg:
            last = [ln.strip() for ln in msg.splitlines() if ln.strip()][-1]
            msg = last.split("BadImageError: ", 1)[-1]
        super().__init__(msg)


def find_missing_images(*data_sources):
    """``(number of distinct paths, [missing paths in order])``; one ``stat`` per distinct path."""
    seen, missing = set(), []
    for source in data_sources:
        for item in source or ():
            p = item.impath
            if p in seen:
                continue
            seen.add(p)
            if not os.path.isfile(p):
                missing.append(p)
    return len(seen), missing


def check_images_exist(*data_sources, name="dataset"):
    """Stat every distinct ``impath`` once; ``DatasetError`` with the count and the first 3 missing."""
    n, missing = find_missing_images(*data_sources)
    if missing:
        first = ", ".join(missing[:3])
        raise DatasetError(f"{name}: {len(missing)} of {n} image files are missing, first: {first}")
    return n


def read_image(path):
    """``path`` as 8-bit RGB (every mode with its real range: ``image_modes.to_rgb``); ``BadImageError``
    naming ``path`` when it cannot be read or its mode cannot be converted faithfully."""
    try:
        with Image.open(path) as img:
            return to_rgb(img)
    except (OSError, ValueError, SyntaxError) as e:
        raise BadImageError(f"cannot read image {path}: {e}") from None
