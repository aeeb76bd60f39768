"""``build_transform(cfg, is_train)``: Dassl's transform builder for the choices CLIP configs use.

Train: [resize to INPUT.SIZE unless a crop is listed] → random_translation → random_crop
(INPUT.CROP_PADDING) → random_resized_crop(INPUT.SIZE, scale=INPUT.RRCROP_SCALE) → random_flip →
center_crop → ToTensor → normalize(INPUT.PIXEL_MEAN/STD) if listed.
Test (always): Resize(max(INPUT.SIZE)) on the shorter side → CenterCrop(INPUT.SIZE) → ToTensor →
normalize if listed. Interpolation: INPUT.INTERPOLATION. ``INPUT.NO_TRANSFORM`` → ``None`` (the data
wrapper then only resizes to INPUT.SIZE, converts to tensor and normalises if listed).
"""
import random

from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from engine.utils.logger import get_logger

INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}
AVAILABLE_CHOICES = ("random_flip", "random_resized_crop", "normalize", "center_crop", "random_crop",
                     "random_translation")


class Random2DTranslation:
    """Dassl's random translation: with prob ``p`` resize to 1.125x then random-crop to (h, w), else resize."""

    def __init__(self, height, width, p=0.5, interpolation=InterpolationMode.BILINEAR):
        self.height, self.width, self.p, self.interpolation = height, width, p, interpolation

    def __call__(self, img):
        if random.uniform(0, 1) > self.p:
            return T.functional.resize(img, [self.height, self.width], self.interpolation)
        new_w, new_h = int(round(self.width * 1.125)), int(round(self.height * 1.125))
        resized = T.functional.resize(img, [new_h, new_w], self.interpolation)
        x1 = int(round(random.uniform(0, new_w - self.width)))
        y1 = int(round(random.uniform(0, new_h - self.height)))
        return resized.crop((x1, y1, x1 + self.width, y1 + self.height))

    def __repr__(self):
        return f"Random2DTranslation(height={self.height}, width={self.width}, p={self.p})"


def _interp(cfg):
    name = cfg.INPUT.INTERPOLATION
    if name not in INTERPOLATION_MODES:
        raise ValueError(f"INPUT.INTERPOLATION={name!r}; expected one of {sorted(INTERPOLATION_MODES)}")
    return INTERPOLATION_MODES[name]


def _check_choices(choices):
    for choice in choices:
        if choice not in AVAILABLE_CHOICES:
            raise ValueError(f"INPUT.TRANSFORMS contains {choice!r}; supported: {list(AVAILABLE_CHOICES)}")


def build_transform(cfg, is_train=True, choices=None):
    """Compose for train or test, logging each step like Dassl; ``None`` when ``INPUT.NO_TRANSFORM``."""
    log = get_logger()
    if cfg.INPUT.NO_TRANSFORM:
        log.info("Note: no transform is applied!")
        return None
    choices = list(cfg.INPUT.TRANSFORMS if choices is None else choices)
    _check_choices(choices)
    size = tuple(int(s) for s in cfg.INPUT.SIZE)
    target = f"{size[0]}x{size[1]}"
    interp = _interp(cfg)
    normalize = T.Normalize(mean=list(cfg.INPUT.PIXEL_MEAN), std=list(cfg.INPUT.PIXEL_STD))
    tfm = []
    if is_train:
        log.info("Building transform_train")
        if "random_crop" not in choices and "random_resized_crop" not in choices:
            log.info(f"+ resize to {target}")
            tfm.append(T.Resize(size, interpolation=interp))
        if "random_translation" in choices:
            log.info("+ random translation")
            tfm.append(Random2DTranslation(size[0], size[1]))  # Dassl: always bilinear, whatever INPUT.INTERPOLATION
        if "random_crop" in choices:
            pad = cfg.INPUT.CROP_PADDING
            log.info(f"+ random crop (padding = {pad})")
            tfm.append(T.RandomCrop(size, padding=pad))
        if "random_resized_crop" in choices:
            scale = tuple(cfg.INPUT.RRCROP_SCALE)
            log.info(f"+ random resized crop (size={size}, scale={scale})")
            tfm.append(T.RandomResizedCrop(size, scale=scale, interpolation=interp))
        if "random_flip" in choices:
            log.info("+ random flip")
            tfm.append(T.RandomHorizontalFlip())
        if "center_crop" in choices:
            log.info(f"+ {target} center crop")
            tfm.append(T.CenterCrop(size))
    else:
        log.info("Building transform_test")
        log.info(f"+ resize the smaller edge to {max(size)}")
        tfm.append(T.Resize(max(size), interpolation=interp))
        log.info(f"+ {target} center crop")
        tfm.append(T.CenterCrop(size))
    log.info("+ to torch tensor of range [0, 1]")
    tfm.append(T.ToTensor())
    if "normalize" in choices:
        log.info(f"+ normalization (mean={list(cfg.INPUT.PIXEL_MEAN)}, std={list(cfg.INPUT.PIXEL_STD)})")
        tfm.append(normalize)
    return T.Compose(tfm)


def build_no_transform(cfg):
    """What the wrapper uses when the transform is ``None``: resize to INPUT.SIZE, ToTensor, normalize if listed."""
    size = tuple(int(s) for s in cfg.INPUT.SIZE)
    tfm = [T.Resize(size, interpolation=_interp(cfg)), T.ToTensor()]
    if "normalize" in cfg.INPUT.TRANSFORMS:
        tfm.append(T.Normalize(mean=list(cfg.INPUT.PIXEL_MEAN), std=list(cfg.INPUT.PIXEL_STD)))
    return T.Compose(tfm)
