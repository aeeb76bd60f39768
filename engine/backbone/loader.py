"""Build the backbone from config: the unmodified OpenAI ``clip.model.CLIP``, or an OpenCLIP model.

Config keys: ``MODEL.BACKBONE.NAME`` (a ``clip.available_models()`` name, ``ViT-Tiny/16``, or
``open_clip:<architecture>``, see ``engine.backbone.open_clip_backbone``), ``MODEL.BACKBONE.PATH`` (a
weights file; for OpenAI names the architecture is inferred from it, and a file recognisably holding
OpenCLIP weights is refused), ``MODEL.BACKBONE.PRETRAINED`` (an OpenCLIP pretrained tag; Dassl's bool
otherwise, unused), ``MODEL.BACKBONE.RANDOM_INIT`` (seeded random weights, seed ``SEED`` if >= 0 else
0), ``INPUT.SIZE`` (must equal the model's image size). The model is returned in fp32, on CPU, in
``eval()`` mode; callers move / cast / freeze it.
"""
import torch

from engine.utils.logger import get_logger

from ._clip import CLIP, VisionTransformer, clip
from .architectures import TINY_NAME, architecture_from_state_dict, get_architecture
from .open_clip_backbone import PREFIX as OPEN_CLIP_PREFIX, is_open_clip_name, load_open_clip, openclip_evidence
from .weights import locate_weights, read_state_dict


def available_backbones() -> list:
    """OpenAI names accepted by ``MODEL.BACKBONE.NAME``: ``clip.available_models()`` plus ``ViT-Tiny/16``
    (and any ``open_clip:<architecture>`` of ``open_clip.list_models()``)."""
    return list(clip.available_models()) + [TINY_NAME]


def _fix_attention_masks(model: CLIP) -> None:
    """Give the text blocks a real causal mask (a model built on the meta device has a meta one)."""
    mask = model.build_attention_mask()
    for block in model.transformer.resblocks:
        block.attn_mask = mask


def load_clip_from_state_dict(state_dict) -> CLIP:
    """Build ``clip.model.CLIP`` from an OpenAI-format state dict, in fp32, CPU, eval mode.

    Same architecture inference as ``clip.model.build_model`` but without its fp16 round trip
    (fp32 weights stay bit-exact). The model is built on the meta device (no global RNG use)
    and receives fp32 copies of the tensors, so it never aliases the caller's dict.
    """
    sd = {k: v for k, v in state_dict.items() if k not in ("input_resolution", "context_length", "vocab_size")}
    try:
        arch = architecture_from_state_dict(sd)
    except KeyError as err:
        raise ValueError(f"not an OpenAI CLIP state dict: missing key {err.args[0]!r}") from None
    with torch.device("meta"):
        model = CLIP(**arch)
    sd = {k: v.detach().to(device="cpu", dtype=torch.float32 if v.is_floating_point() else v.dtype, copy=True)
          for k, v in sd.items()}
    result = model.load_state_dict(sd, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"not an OpenAI CLIP state dict: missing keys {result.missing_keys[:3]}, "
                         f"unexpected keys {result.unexpected_keys[:3]}")
    _fix_attention_masks(model)
    return model.float().eval()


def build_random_clip(name: str, seed: int = 0) -> CLIP:
    """Architecture ``name`` with CLIP's own initialisation, seeded by ``seed``.

    Uses a forked CPU RNG: the global torch (and Python / NumPy) random streams are left as they were.
    """
    arch = get_architecture(name)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        model = CLIP(**arch)
    return model.float().eval()


def _check_input_size(input_size, resolution: int, what: str) -> None:
    """``INPUT.SIZE`` must be (R, R) for a CLIP whose ``visual.input_resolution`` is R."""
    size = tuple(int(s) for s in input_size)
    if size != (resolution, resolution):
        raise ValueError(f"INPUT.SIZE {size} does not match the image size {resolution}x{resolution} of "
                         f"{what}; set INPUT.SIZE ({resolution}, {resolution})")


def load_clip(cfg) -> CLIP:
    """The CLIP backbone named by ``cfg.MODEL.BACKBONE`` (fp32, CPU, eval mode).

    Weights: ``MODEL.BACKBONE.PATH`` if set, else the CLIP cache / download of ``NAME``
    (``BackboneWeightsNotFound`` if neither works); ``RANDOM_INIT True`` builds seeded random
    weights instead and logs a loud warning. ``INPUT.SIZE`` is checked against the model.
    """
    logger = get_logger()
    bb = cfg.MODEL.BACKBONE
    name, path, random_init = bb.NAME, bb.PATH, bool(bb.RANDOM_INIT)
    if is_open_clip_name(name):
        return load_open_clip(cfg, _check_input_size)
    tag = bb.get("PRETRAINED", True)
    if isinstance(tag, str) and tag:
        raise ValueError(f"MODEL.BACKBONE.PRETRAINED {tag!r} is an OpenCLIP pretrained tag; it needs "
                         f"MODEL.BACKBONE.NAME {OPEN_CLIP_PREFIX}<architecture> (e.g. {OPEN_CLIP_PREFIX}ViT-B-16), "
                         f"not the OpenAI name {name!r}")
    if random_init and path:
        raise ValueError(f"MODEL.BACKBONE.RANDOM_INIT True conflicts with MODEL.BACKBONE.PATH {path!r}; set only one")
    if random_init:
        seed = cfg.SEED if cfg.SEED >= 0 else 0
        _check_input_size(cfg.INPUT.SIZE, get_architecture(name)["image_resolution"], f"CLIP backbone {name!r}")
        model = build_random_clip(name, seed)
        logger.warning(f"RANDOM WEIGHTS: CLIP backbone {name} built with random weights "
                       f"(MODEL.BACKBONE.RANDOM_INIT True, seed {seed}); every accuracy of this run is "
                       f"meaningless (tests, benchmarks and smoke runs only)")
        return model
    if path:
        source = path
    else:
        if name == TINY_NAME:
            raise ValueError(f"MODEL.BACKBONE.NAME {name!r} is a test architecture without released weights; "
                             f"set MODEL.BACKBONE.RANDOM_INIT True or MODEL.BACKBONE.PATH")
        if name not in clip.available_models():
            get_architecture(name)  # raises the "unknown name / did you mean" error
        source = locate_weights(name)
    state_dict = read_state_dict(source)
    evidence = openclip_evidence(state_dict)
    if evidence:
        raise ValueError(f"{source} holds OpenCLIP weights ({evidence}), not OpenAI CLIP's; set MODEL.BACKBONE.NAME "
                         f"{OPEN_CLIP_PREFIX}<architecture> (e.g. {OPEN_CLIP_PREFIX}ViT-B-16)")
    try:
        model = load_clip_from_state_dict(state_dict)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    vit = isinstance(model.visual, VisionTransformer)
    logger.info(f"Loaded CLIP weights from {source}: OpenAI CLIP architecture ({'ViT' if vit else 'ResNet'}, "
                f"QuickGELU activation), image size "
                f"{model.visual.input_resolution}, text width {model.transformer.width}, "
                f"{model.transformer.layers} text blocks, embed dim {model.text_projection.shape[1]}")
    _check_input_size(cfg.INPUT.SIZE, model.visual.input_resolution, f"the CLIP weights in {source}")
    return model
