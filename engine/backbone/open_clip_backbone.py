"""OpenCLIP backbones: ``MODEL.BACKBONE.NAME open_clip:<architecture>`` (docs/BACKBONE.md).

The model is ``open_clip.CLIP`` / ``open_clip.CustomTextCLIP`` built by the ``open_clip_torch``
package from its own architecture config (``open_clip.get_model_config``), unmodified. Weights come
from exactly one of ``MODEL.BACKBONE.PATH`` (a local OpenCLIP checkpoint), ``MODEL.BACKBONE.PRETRAINED``
(an OpenCLIP pretrained tag, resolved through open_clip's own cache / download) or
``MODEL.BACKBONE.RANDOM_INIT True`` (seeded random weights). ``OpenCLIPBackbone`` presents the model
under OpenAI CLIP's attribute names (``token_embedding``, ``transformer``, ``ln_final``,
``text_projection``, ``visual``, ``logit_scale``, ``dtype``) so the prompted encoders and the methods
drive it as they drive OpenAI's CLIP; it adds the architecture's tokenizer and preprocessing.

Supported: architectures with open_clip's own text transformer (causal mask, EOT = argmax pooling,
CLIP's BPE tokenizer) and its ViT or ResNet image tower; timm / Hugging Face towers, CoCa, attention
pooling and SigLIP's logit bias are refused with a one-line error. LayerNorms are open_clip's
``LayerNormFp32`` (what open_clip itself builds for fp16/bf16 models): in fp32 they equal its plain
``LayerNorm``, and they keep working after the matmul weights are cast to ``TRAINER.<M>.PREC``.
"""
import difflib
import os
import warnings

import torch
from torch import nn

from engine.utils.logger import get_logger

PREFIX = "open_clip:"
#: our test architectures (``engine/backbone/open_clip_configs/*.json``), registered with open_clip
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "open_clip_configs")
_registered = False


def is_open_clip_name(name) -> bool:
    """True for ``MODEL.BACKBONE.NAME`` values of the form ``open_clip:<architecture>``."""
    return isinstance(name, str) and name.startswith(PREFIX)


def architecture_of(name: str) -> str:
    """``open_clip:ViT-B-16`` -> ``ViT-B-16`` (one-line error when the architecture is empty)."""
    arch = name[len(PREFIX):].strip()
    if not arch:
        raise ValueError(f"MODEL.BACKBONE.NAME {name!r}: expected open_clip:<architecture>, e.g. open_clip:ViT-B-16")
    return arch


def open_clip_module():
    """The ``open_clip`` package (bundled test configs registered), or a one-line error naming the pip package."""
    global _registered
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import open_clip
    except ImportError as err:
        raise ValueError(f"open_clip: backbones need the open_clip_torch package (pip install open_clip_torch): "
                         f"{err}") from None
    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True
    return open_clip


def model_config(arch: str) -> dict:
    """open_clip's config dict of ``arch``, checked for what the prompted encoders support."""
    oc = open_clip_module()
    cfg = oc.get_model_config(arch)
    if cfg is None:
        close = difflib.get_close_matches(arch, oc.list_models(), n=1)
        hint = f"; did you mean open_clip:{close[0]}?" if close else ""
        raise ValueError(f"MODEL.BACKBONE.NAME open_clip:{arch}: not an open_clip architecture "
                         f"(open_clip.list_models()){hint}")
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    refused = [
        ("a timm image tower", vision.get("timm_model_name")),
        ("a Hugging Face text tower", text.get("hf_model_name")),
        ("a Hugging Face tokenizer", text.get("hf_tokenizer_name")),
        ("a CoCa decoder", "multimodal_cfg" in cfg),
        ("attention pooling", vision.get("attentional_pool")),
        ("a SigLIP logit bias", cfg.get("init_logit_bias") is not None),
        ("a non-causal text transformer", text.get("no_causal_mask")),
        ("a text class token", text.get("embed_cls")),
        (f"text pooling {text.get('pool_type')!r}", text.get("pool_type", "argmax") != "argmax"),
        (f"image pooling {vision.get('pool_type')!r}", vision.get("pool_type", "tok") not in ("tok", "avg")),
    ]
    for what, present in refused:
        if present:
            raise ValueError(f"MODEL.BACKBONE.NAME open_clip:{arch} has {what}, which the prompted encoders do "
                             f"not drive; use an architecture with open_clip's own text and ViT/ResNet towers "
                             f"(e.g. open_clip:ViT-B-16)")
    size = vision.get("image_size", 224)
    if isinstance(size, (list, tuple)) and len(set(size)) != 1:
        raise ValueError(f"MODEL.BACKBONE.NAME open_clip:{arch}: non-square image size {tuple(size)} is not supported")
    return cfg


def quick_gelu(arch: str) -> bool:
    """Whether ``arch`` uses QuickGELU (``-quickgelu`` configs, OpenAI's activation) rather than GELU."""
    return bool(model_config(arch).get("quick_gelu", False))


def default_preprocess(arch: str, tag: str = "") -> dict:
    """``{"size", "mean", "std", "interpolation"}`` of ``arch`` (and of pretrained ``tag`` when given)."""
    oc = open_clip_module()
    size = model_config(arch)["vision_cfg"].get("image_size", 224)
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    out = {"size": size, "mean": tuple(oc.OPENAI_DATASET_MEAN), "std": tuple(oc.OPENAI_DATASET_STD),
           "interpolation": "bicubic"}
    pcfg = oc.get_pretrained_cfg(arch, tag) if tag else {}
    for key in ("mean", "std", "interpolation"):
        if pcfg.get(key):
            out[key] = tuple(pcfg[key]) if key != "interpolation" else str(pcfg[key])
    return out


# ------------------------------------------------------------------------------ the adapter
class OpenCLIPBackbone(nn.Module):
    """An open_clip model seen through OpenAI CLIP's attribute names (its modules, shared, not copied).

    ``model`` is the open_clip model (registered, so ``.to`` / casts reach every tensor). Read-only
    views: ``token_embedding, positional_embedding, transformer, ln_final, text_projection`` (text
    tower, also for ``CustomTextCLIP``), ``visual``, ``logit_scale``, ``dtype`` (of the image
    weights, as OpenAI's ``CLIP.dtype``). ``tokenize(texts)`` is the architecture's tokenizer;
    ``preprocess`` its image size, mean, std and interpolation; ``encode_text`` / ``encode_image``
    are open_clip's own.
    """

    is_open_clip = True

    def __init__(self, model, architecture: str, preprocess: dict):
        super().__init__()
        self.model = model
        self.architecture = architecture
        self.activation = "QuickGELU" if quick_gelu(architecture) else "GELU"
        self.preprocess = dict(preprocess)
        self._tokenizer = open_clip_module().get_tokenizer(architecture)
        if not isinstance(self._tokenizer, open_clip_module().SimpleTokenizer):
            raise ValueError(f"open_clip:{architecture}: tokenizer {type(self._tokenizer).__name__} is not supported "
                             f"(the prompted encoders need CLIP's BPE tokenizer, EOT = highest token id)")

    @property
    def _text(self):
        text = getattr(self.model, "text", None)
        return text if text is not None else self.model

    @property
    def token_embedding(self):
        return self._text.token_embedding

    @property
    def positional_embedding(self):
        return self._text.positional_embedding

    @property
    def transformer(self):
        return self._text.transformer

    @property
    def ln_final(self):
        return self._text.ln_final

    @property
    def text_projection(self):
        return self._text.text_projection

    @property
    def visual(self):
        return self.model.visual

    @property
    def logit_scale(self):
        return self.model.logit_scale

    @property
    def context_length(self) -> int:
        return int(self.positional_embedding.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        visual = self.visual
        weight = visual.conv1.weight if hasattr(visual, "conv1") else next(visual.parameters())
        return weight.dtype

    def tokenize(self, texts, truncate: bool = False) -> torch.Tensor:
        """``LongTensor[N, context_length]`` with the architecture's tokenizer; a text too long for the
        context raises ValueError naming it (unless ``truncate``)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        tok = self._tokenizer
        if not truncate:
            for text in texts:
                if len(tok.encode(text)) + 2 > self.context_length:
                    raise ValueError(f"cannot tokenize: Input {text} is too long for context length "
                                     f"{self.context_length}")
        return tok(texts, context_length=self.context_length).long()

    def encode_text(self, text):
        return self.model.encode_text(text)

    def encode_image(self, image):
        return self.model.encode_image(image)

    def describe(self) -> str:
        """``OpenCLIP ViT-B-16 (ViT, GELU activation)`` — the architecture and activation, for logs."""
        kind = "ViT" if hasattr(self.visual, "class_embedding") else "ResNet"
        return f"OpenCLIP {self.architecture} ({kind}, {self.activation} activation)"


def build_open_clip(arch: str, seed: int = 0, preprocess: dict = None) -> OpenCLIPBackbone:
    """``arch`` with open_clip's own initialisation, seeded by ``seed`` (forked CPU RNG: the global
    streams are untouched), fp32, CPU, eval mode."""
    oc = open_clip_module()
    cfg = dict(model_config(arch))
    custom_text = bool(cfg.pop("custom_text", False))
    cls = oc.CustomTextCLIP if custom_text else oc.CLIP
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        # cast_dtype fp16 only selects open_clip's LayerNormFp32; the weights are created in fp32
        model = cls(**cfg, cast_dtype=torch.float16)
    model = model.float().eval()
    return OpenCLIPBackbone(model, arch, preprocess or default_preprocess(arch))


# ------------------------------------------------------------------------------ weights files
def read_open_clip_state_dict(path: str) -> dict:
    """``{name: tensor}`` from an OpenCLIP checkpoint: ``.safetensors`` (safetensors loader) or a
    ``torch.save`` file (``torch.load(weights_only=True)``), a ``state_dict`` wrapper and the
    ``module.`` prefix of training checkpoints removed. One-line errors naming the file."""
    from .weights import as_state_dict, unreadable_weights

    if not os.path.isfile(path):
        raise FileNotFoundError(f"MODEL.BACKBONE.PATH {path!r} is not a file")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            obj = load_file(path, device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise unreadable_weights(err, path, "OpenCLIP", "a state-dict file (.pt/.pth/.bin or .safetensors)") from None
    obj = as_state_dict(obj, path, "OpenCLIP")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def openclip_evidence(state_dict: dict):
    """Why ``state_dict`` is an OpenCLIP checkpoint rather than OpenAI's (a short phrase), or None when
    its keys cannot tell (OpenCLIP's standard ``CLIP`` uses OpenAI's key names)."""
    keys = list(state_dict)
    if keys and all(k.startswith("module.") for k in keys):
        return "its keys start with 'module.' (an OpenCLIP training checkpoint)"
    checks = (
        (lambda k: k.startswith("text."), "it has the key {!r} (OpenCLIP's CustomTextCLIP layout)"),
        (lambda k: ".ls_1." in k or ".ls_2." in k, "it has the layer-scale key {!r}"),
        (lambda k: k == "logit_bias" or k.startswith(("visual.trunk.", "visual.head.", "visual.attn_pool")),
         "it has the key {!r}"),
    )
    for match, phrase in checks:
        found = next((k for k in keys if match(k)), None)
        if found is not None:
            return phrase.format(found)
    return None


def _fit_state_dict(model, sd):
    """Convert an OpenCLIP state dict the way open_clip's ``load_checkpoint`` does before loading."""
    if hasattr(model, "text") and "positional_embedding" in sd:
        sd = open_clip_module().model.convert_to_custom_text_state_dict(sd)
    for name in ("logit_scale", "logit_bias"):
        own = getattr(model, name, None)
        if name in sd and isinstance(own, torch.Tensor) and sd[name].ndim != own.ndim:
            sd[name] = sd[name].reshape(own.shape)
    return sd


def load_open_clip_weights(backbone: OpenCLIPBackbone, path: str, source: str) -> None:
    """Load the checkpoint ``path`` into ``backbone`` (fp32 copies); mismatches are one-line errors
    naming the architecture key."""
    arch = backbone.architecture
    name_hint = f"check MODEL.BACKBONE.NAME open_clip:{arch}"
    from .weights import is_torchscript_archive, read_state_dict

    if is_torchscript_archive(path):
        if backbone.activation != "QuickGELU":
            raise ValueError(f"{source} is an OpenAI CLIP TorchScript archive (trained with QuickGELU) but "
                             f"open_clip:{arch} uses GELU; set MODEL.BACKBONE.NAME to the OpenAI name (e.g. ViT-B/16) "
                             f"or to the -quickgelu architecture (e.g. open_clip:{arch}-quickgelu)")
        sd = read_state_dict(path)
    else:
        sd = read_open_clip_state_dict(path)
    sd = _fit_state_dict(backbone.model, dict(sd))
    sd = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in sd.items()}
    try:
        result = backbone.model.load_state_dict(sd, strict=False)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        detail = detail.split("size mismatch for ", 1)[-1][:200]
        raise ValueError(f"{source} does not fit open_clip:{arch} (size mismatch for {detail}); {name_hint}") from None
    missing = list(result.missing_keys)
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise ValueError(f"{source} does not fit open_clip:{arch}: missing keys {missing[:3]}, unexpected keys "
                         f"{unexpected[:3]}; {name_hint}")


def resolve_pretrained_tag(arch: str, tag: str) -> str:
    """Local file of OpenCLIP pretrained ``tag`` for ``arch`` via open_clip's own cache / download."""
    from .weights import BackboneWeightsNotFound

    oc = open_clip_module()
    pcfg = oc.get_pretrained_cfg(arch, tag)
    if not pcfg:
        tags = oc.list_pretrained_tags_by_model(arch)
        raise ValueError(f"MODEL.BACKBONE.PRETRAINED {tag!r} is not an OpenCLIP pretrained tag of {arch} "
                         f"(available: {', '.join(tags) or 'none'})")
    tag_quick = bool(pcfg.get("quick_gelu", False))
    if tag_quick != quick_gelu(arch):
        want = f"{arch}-quickgelu" if tag_quick else arch.replace("-quickgelu", "")
        raise ValueError(f"MODEL.BACKBONE.PRETRAINED {tag!r} was trained with {'QuickGELU' if tag_quick else 'GELU'} "
                         f"but open_clip:{arch} uses the other activation; set MODEL.BACKBONE.NAME open_clip:{want}")
    try:
        path = oc.download_pretrained(pcfg)
    except Exception as err:  # network, hub, permissions: all mean "no usable weights"
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        raise BackboneWeightsNotFound(
            f"No weights for open_clip:{arch} pretrained {tag!r}: open_clip's download failed ({reason}); "
            f"download them once where there is a network (open_clip's cache), or set MODEL.BACKBONE.PATH to the "
            f"checkpoint file") from None
    if not path or not os.path.isfile(path):
        raise BackboneWeightsNotFound(f"No weights for open_clip:{arch} pretrained {tag!r} (open_clip returned "
                                      f"{path!r}); set MODEL.BACKBONE.PATH to the checkpoint file")
    return path


def load_open_clip(cfg, check_input_size) -> OpenCLIPBackbone:
    """The OpenCLIP backbone named by ``cfg.MODEL.BACKBONE`` (fp32, CPU, eval mode); see the module docstring.

    ``check_input_size(input_size, resolution, what)`` is the loader's ``INPUT.SIZE`` check.
    """
    logger = get_logger()
    bb = cfg.MODEL.BACKBONE
    arch = architecture_of(bb.NAME)
    model_config(arch)
    tag = bb.get("PRETRAINED", True)
    tag = tag if isinstance(tag, str) else ""
    path, random_init = bb.PATH, bool(bb.RANDOM_INIT)
    chosen = [k for k, v in (("MODEL.BACKBONE.PATH", path), ("MODEL.BACKBONE.PRETRAINED", tag),
                             ("MODEL.BACKBONE.RANDOM_INIT", random_init)) if v]
    if len(chosen) > 1:
        raise ValueError(f"MODEL.BACKBONE.NAME {bb.NAME}: set only one of {', '.join(chosen)}")
    if not chosen:
        raise ValueError(f"MODEL.BACKBONE.NAME {bb.NAME} needs its weights: MODEL.BACKBONE.PRETRAINED <tag> "
                         f"(open_clip.list_pretrained_tags_by_model), MODEL.BACKBONE.PATH <checkpoint>, or "
                         f"MODEL.BACKBONE.RANDOM_INIT True")
    preprocess = default_preprocess(arch, tag)
    check_input_size(cfg.INPUT.SIZE, preprocess["size"], f"backbone {bb.NAME}")
    seed = cfg.SEED if cfg.SEED >= 0 else 0
    backbone = build_open_clip(arch, seed, preprocess)
    if random_init:
        logger.warning(f"RANDOM WEIGHTS: CLIP backbone {bb.NAME} built with random weights "
                       f"(MODEL.BACKBONE.RANDOM_INIT True, seed {seed}); every accuracy of this run is "
                       f"meaningless (tests, benchmarks and smoke runs only)")
        logger.info(f"Backbone: {backbone.describe()}, random weights")
    else:
        source = path or resolve_pretrained_tag(arch, tag)
        label = source if path else f"{source} (pretrained {tag})"
        load_open_clip_weights(backbone, source, label)
        logger.info(f"Loaded CLIP weights from {label}: {backbone.describe()}, image size {preprocess['size']}, "
                    f"text width {backbone.transformer.width}, {backbone.transformer.layers} text blocks")
    _warn_normalisation(cfg, preprocess, bb.NAME, tag)
    return backbone


def _warn_normalisation(cfg, preprocess, name, tag):
    """Warn when ``INPUT.PIXEL_MEAN/STD`` differ from the normalisation the weights were trained with."""
    for key, want in (("PIXEL_MEAN", preprocess["mean"]), ("PIXEL_STD", preprocess["std"])):
        if cfg.INPUT.get(key) is None:
            continue
        have = tuple(float(v) for v in cfg.INPUT[key])
        if len(have) != len(want) or any(abs(a - b) > 1e-4 for a, b in zip(have, want)):
            what = f"pretrained {tag!r}" if tag else "this architecture"
            get_logger().warning(f"INPUT.{key} {list(have)} differs from {list(want)} used by {name} {what}; "
                                 f"set INPUT.{key} {list(want)} unless this is intended")
