"""Hand-crafted prompt templates per dataset (DATASET.NAME -> format string).

``ZEROSHOT_TEMPLATES``: the zero-shot CLIP trainer's (CoOp repo ``zsclip.py``).
``COMMA_TEMPLATES``: the targets of COMMA's knowledge-preservation loss (official ``comma.py``;
differs from the zero-shot table only for DescribableTextures). ``DATASET.TEMPLATE`` overrides both;
datasets not listed (Shapes, ImageFolder, CSV, ...) use ``DEFAULT_TEMPLATE``.
"""
DEFAULT_TEMPLATE = "a photo of a {}."

ZEROSHOT_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}

COMMA_TEMPLATES = dict(ZEROSHOT_TEMPLATES, DescribableTextures="a photo of a {}, a type of texture.")

# ZeroshotCLIP2 prompt ensemble (CoOp repo).
IMAGENET_TEMPLATES_SELECT = [
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
]


def template_for(cfg, table=ZEROSHOT_TEMPLATES):
    """The template for ``cfg.DATASET.NAME``: ``DATASET.TEMPLATE`` if set, else ``table``, else the default."""
    override = cfg.DATASET.get("TEMPLATE", "")
    if override:
        if "{}" not in override:
            raise ValueError(f"DATASET.TEMPLATE must contain '{{}}' for the class name, got {override!r}")
        return override
    return table.get(cfg.DATASET.NAME, DEFAULT_TEMPLATE)


def format_classname(name):
    """Class names get '_' replaced by ' ' before formatting (CoOp/MaPLe/COMMA convention)."""
    return name.replace("_", " ")
