"""Every PIL image mode the loader meets, converted to 8-bit RGB with its real range, or refused.

:func:`to_rgb` is the one conversion the loader, the image check, ``engine.api`` and ``tools/predict.py``
use. Contract per mode:

- ``RGB``, ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``HSV``, ``RGBX``: PIL's conversion (exact).
- ``LA``, ``PA``, ``RGBA``, ``RGBa``: the colour channels; the alpha channel is dropped, as Dassl's
  ``read_image`` (``convert("RGB")``) does, so that results match the official code's.
- 16-bit greyscale (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``: 16-bit PNG and TIFF): ``v >> 8`` (the
  full 0..65535 range mapped onto 0..255, as PIL already reads 16-bit RGB PNG/TIFF), never clipped.
- ``I`` (32-bit integer; 16-bit files in older PIL): the 16-bit range as above; values outside
  0..65535 are refused.
- ``F`` (32-bit float): values in 0..1 scaled by 255; values outside 0..1 or non-finite refused.
- anything else (``LAB``, ``La``, ``BGR;15``, ...): refused.

A refusal is :class:`UnsupportedImage` (a ``ValueError``) whose text is a short reason; the callers add
the file name.
"""
import numpy as np
from PIL import Image

__all__ = ["UnsupportedImage", "to_rgb", "mode_reason", "SUPPORTED_MODES"]

_DIRECT = ("RGB", "1", "L", "P", "CMYK", "YCbCr", "HSV", "RGBX", "LA", "PA", "RGBA", "RGBa")
_SIXTEEN = ("I;16", "I;16L", "I;16B", "I;16N")
SUPPORTED_MODES = _DIRECT + _SIXTEEN + ("I", "F")
#: modes whose range is only known once the pixels are read (the image check decodes them)
NEEDS_PIXELS = ("I", "F")


class UnsupportedImage(ValueError):
    """An image mode (or a pixel range) that cannot be converted to 8-bit RGB faithfully."""


def mode_reason(mode):
    """None when ``mode`` is one :func:`to_rgb` converts (given its pixel range), else a short reason."""
    if mode in SUPPORTED_MODES:
        return None
    return f"unsupported image mode {mode} (convert it to 8-bit RGB or greyscale)"


def _grey(values):
    return Image.fromarray(values.astype(np.uint8), mode="L").convert("RGB")


def to_rgb(img):
    """``img`` as an 8-bit ``RGB`` image (see the module docstring); :class:`UnsupportedImage` otherwise."""
    mode = img.mode
    if mode in _DIRECT:
        return img.convert("RGB")
    if mode in _SIXTEEN:
        return _grey(np.asarray(img).astype(np.uint32) >> 8)
    if mode == "I":
        values = np.asarray(img, dtype=np.int64)
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi > 65535:
            raise UnsupportedImage(f"32-bit integer image (mode I) with values {lo}..{hi}, outside the 16-bit range "
                                   "0..65535 (convert it to 8 or 16 bits)")
        return _grey(values >> 8)
    if mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if not np.isfinite(values).all():
            raise UnsupportedImage("32-bit float image (mode F) with non-finite values")
        lo, hi = float(values.min()), float(values.max())
        if lo < 0.0 or hi > 1.0:
            raise UnsupportedImage(f"32-bit float image (mode F) with values {lo:g}..{hi:g}, outside 0..1 "
                                   "(convert it to 8 or 16 bits, or scale it to 0..1)")
        return _grey(np.rint(values * 255.0))
    raise UnsupportedImage(mode_reason(mode))
