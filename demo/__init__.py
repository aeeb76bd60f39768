"""The offline demo: drawn-shape datasets (Shapes, ShapeSketches) and the contrastive pretraining of the
tiny CLIP they are used with. Importing ``demo`` registers the demo datasets; ``engine`` never imports it.
"""
from . import shapes  # noqa: F401  (registers Shapes and ShapeSketches)
