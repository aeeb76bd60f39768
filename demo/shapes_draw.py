"""Drawing of one ``Shapes`` image (PIL only, own ``random.Random``; never the global ``random``).

``draw_shape(name, rng, size)`` returns an RGB ``PIL.Image``: a filled shape of a random colour, size,
position and rotation on a random, clearly different background colour.
``draw_shape_with_attributes`` draws the same image (same ``rng`` draws) and also returns what was
drawn (``ShapeAttributes``: colours, radius and centre as fractions of the image size), which the
tiny-CLIP pretraining turns into captions. ``draw_sketch`` draws the same kind of shape as an outline
only (the ``ShapeSketches`` dataset: a style the tiny CLIP never sees in pretraining).
"""
import math
from typing import NamedTuple

from PIL import Image, ImageChops, ImageDraw, ImageFilter

SHAPE_NAMES = ("circle", "square", "triangle", "star", "hexagon",
               "pentagon", "heart", "cross", "diamond", "crescent")


def _colour(rng):
    return tuple(rng.randrange(256) for _ in range(3))


def _distinct_colours(rng):
    """(background, foreground) with a Euclidean RGB distance of at least 160."""
    bg = _colour(rng)
    while True:
        fg = _colour(rng)
        if math.dist(bg, fg) >= 160:
            return bg, fg


def _rotate(points, cx, cy, angle):
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def _regular(n, r, start_deg, stretch_y=1.0):
    return [(r * math.cos(math.radians(start_deg) + 2 * math.pi * k / n),
             stretch_y * r * math.sin(math.radians(start_deg) + 2 * math.pi * k / n)) for k in range(n)]


def _star(r):
    return [((r if k % 2 == 0 else 0.45 * r) * math.cos(-math.pi / 2 + math.pi * k / 5),
             (r if k % 2 == 0 else 0.45 * r) * math.sin(-math.pi / 2 + math.pi * k / 5)) for k in range(10)]


def _cross(r):
    w = 0.33 * r
    return [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]


def _heart(r):
    pts = []
    for k in range(60):
        t = 2 * math.pi * k / 60
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x * r / 16.5, -y * r / 16.5 - 0.1 * r))
    return pts


class ShapeAttributes(NamedTuple):
    """What one image shows: shape name, RGB colours, radius and centre as fractions of the side."""

    shape: str
    foreground: tuple
    background: tuple
    radius: float
    x: float
    y: float


def draw_shape(name, rng, size=224):
    """One image of shape ``name`` drawn with ``rng`` (a ``random.Random``)."""
    return draw_shape_with_attributes(name, rng, size)[0]


def draw_shape_with_attributes(name, rng, size=224):
    """``(image, ShapeAttributes)``; the image equals ``draw_shape(name, rng, size)`` for the same ``rng`` state."""
    if name not in SHAPE_NAMES:
        raise ValueError(f"unknown shape {name!r}; expected one of {SHAPE_NAMES}")
    bg, fg = _distinct_colours(rng)
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    r = rng.uniform(0.16, 0.36) * size
    margin = r + 0.04 * size
    cx, cy = rng.uniform(margin, size - margin), rng.uniform(margin, size - margin)
    attrs = ShapeAttributes(name, fg, bg, r / size, cx / size, cy / size)
    jitter = math.radians(rng.uniform(-12, 12))
    if name == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fg)
        return img, attrs
    if name == "crescent":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fg)
        phi = rng.uniform(0, 2 * math.pi)
        ox, oy = cx + 0.45 * r * math.cos(phi), cy + 0.45 * r * math.sin(phi)
        draw.ellipse((ox - 0.85 * r, oy - 0.85 * r, ox + 0.85 * r, oy + 0.85 * r), fill=bg)
        return img, attrs
    shapes = {
        "square": lambda: _regular(4, r * 1.2, 45),
        "diamond": lambda: _regular(4, r, 0, stretch_y=1.35),
        "triangle": lambda: _regular(3, r, -90),
        "pentagon": lambda: _regular(5, r, -90),
        "hexagon": lambda: _regular(6, r, rng.uniform(0, 60)),
        "star": lambda: _star(r),
        "cross": lambda: _cross(r),
        "heart": lambda: _heart(r),
    }
    draw.polygon(_rotate(shapes[name](), cx, cy, jitter), fill=fg)
    return img, attrs


#: outline width of ``draw_sketch`` as a fraction of the image side (10 px at 224 px)
SKETCH_STROKE = 0.045


def outline(image, attrs, stroke=SKETCH_STROKE):
    """The outline of the shape in ``image`` (drawn with ``attrs``): foreground pixels within
    ``stroke * side`` (Chebyshev distance) of the background, the rest background colour."""
    mask = ImageChops.difference(image, Image.new("RGB", image.size, attrs.background)).convert("L")
    mask = mask.point(lambda v: 255 if v else 0)
    inner = mask
    for _ in range(max(1, round(stroke * image.size[0]))):  # 3x3 erosions compose to a (2k+1)^2 one, faster
        inner = inner.filter(ImageFilter.MinFilter(3))
    out = Image.new("RGB", image.size, attrs.background)
    out.paste(attrs.foreground, mask=ImageChops.subtract(mask, inner))
    return out


def draw_sketch(name, rng, size=224):
    """One outline drawing of shape ``name``: ``draw_shape`` (same ``rng`` draws), outline only."""
    image, attrs = draw_shape_with_attributes(name, rng, size)
    return outline(image, attrs)
