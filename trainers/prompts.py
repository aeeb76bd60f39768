"""Prompt building blocks shared by every method (no method imports another for these).

* Token helpers: :func:`embed_texts` (tokenise + CLIP token embedding), :func:`count_words`
  (BPE length), :func:`build_class_prompts` (``"<prefix> <class>."`` per class).
* Context initialisation, :func:`init_context`: learned context ``[n, D]`` from the first ``n``
  tokens of ``CTX_INIT`` after SOS (the whole init text stays the sentence prefix, so init words
  beyond ``n`` are fixed tokens), or N(0, 0.02) with the prefix ``"X X .. X"``. ``n`` must fit
  the init text (``n <= count_words(CTX_INIT)``): one check for every method.
* Class-sentence assembly, :class:`ClassSentences`: buffers ``token_prefix`` (SOS), ``token_suffix``
  (everything after the ``n`` context positions) and ``tokenized_prompts``; ``assemble(ctx)`` gives
  ``[..., C, 77, D] = cat(SOS, ctx, suffix)`` for a shared ``[n, D]``, per-class ``[C, n, D]`` or
  batched ``[..., C, n, D]`` context.
* Deep prompts: :func:`deep_prompt_list` (``count`` independent N(0, 0.02) ``[n, D]`` tensors).
* Depth/width checks, :func:`check_prompt_depth`: ``lo <= depth <= layers`` and ``n >= 1`` for a
  prompted branch, one-line ``ValueError`` naming the config key.
* Vision prompts, :class:`VisionPrompts` (VPT-deep: appended after CLS+patches, replaced before
  each deep block), and :func:`legacy_prompt_keys` (the official IVLP/VPT checkpoint key names).
* Fixed text features, :func:`template_text_features`:
  ``normalize(mean_k normalize(g(T_k(c))))`` over hand-crafted templates (zero-shot CLIP, VPT).
"""
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.backbone import tokenize, tokenizer_for
from trainers.templates import format_classname

#: standard deviation of every randomly initialised prompt (CoOp, MaPLe, VPT, ...)
PROMPT_INIT_STD = 0.02


# ------------------------------------------------------------------------------------ tokens
def embed_texts(clip_model, texts):
    """Tokenise ``texts`` and return ``(tokenized [N, 77], token embeddings [N, 77, D])`` without gradient."""
    weight = clip_model.token_embedding.weight
    tokenized = tokenizer_for(clip_model)(texts).to(weight.device)
    with torch.no_grad():
        embedding = clip_model.token_embedding(tokenized).to(clip_model.dtype)
    return tokenized, embedding


def count_words(text):
    """Number of BPE tokens of ``text`` (without SOS/EOT): CoOp's ``name_lens``."""
    return int(tokenize([text]).argmax(-1).item()) - 1


def build_class_prompts(clip_model, classnames, prompt_prefix):
    """Tokenise ``"<prompt_prefix> <classname>."`` per class and embed it with CLIP's token embedding.

    Returns ``(tokenized [C, 77] long, embedding [C, 77, D])`` on the model's device, in the model's
    dtype; class names get ``_`` replaced by a space. An empty prefix gives ``"<classname>."``.
    """
    prefix = f"{prompt_prefix} " if prompt_prefix else ""
    return embed_texts(clip_model, [f"{prefix}{format_classname(name)}." for name in classnames])


def text_width(clip_model):
    """Width Dt of CLIP's token embeddings."""
    return clip_model.ln_final.weight.shape[0]


def encoder_widths(clip_model):
    """``(text width Dt, vision width Dv)`` of a CLIP ViT (read from the model, never hard-coded)."""
    visual = clip_model.visual
    if not hasattr(visual, "class_embedding"):
        raise ValueError(f"multi-modal prompts need a ViT image encoder, got {type(visual).__name__}")
    return text_width(clip_model), visual.class_embedding.shape[0]


# ------------------------------------------------------------------------------- initialisation
def random_context(*shape):
    """Prompt vectors drawn from N(0, 0.02) in fp32."""
    ctx = torch.empty(*shape, dtype=torch.float32)
    nn.init.normal_(ctx, std=PROMPT_INIT_STD)
    return ctx


def init_context_from_text(clip_model, text, n_ctx):
    """Embeddings of the first ``n_ctx`` tokens of ``text`` after SOS, as an fp32 ``[n_ctx, D]`` tensor."""
    _, embedding = embed_texts(clip_model, [text.replace("_", " ")])
    return embedding[0, 1:1 + n_ctx, :].float().clone()


def init_context(clip_model, n_ctx, ctx_init, key="N_CTX", max_from_init=None):
    """Initial shallow context and the sentence prefix it replaces: ``(ctx [n_ctx, D] fp32, prefix)``.

    With ``ctx_init`` set (and ``n_ctx <= max_from_init`` when given, MaPLe's official limit of 4)
    ``ctx`` is the embedding of the first ``n_ctx`` tokens of ``ctx_init`` and the prefix is
    ``ctx_init`` itself; ``n_ctx`` larger than its token count is a ``ValueError`` naming ``key``.
    Otherwise ``ctx ~ N(0, 0.02)`` and the prefix is ``n_ctx`` placeholder words ``"X"``.
    """
    n_ctx = int(n_ctx)
    text = ctx_init.replace("_", " ") if ctx_init else ""
    if text and (max_from_init is None or n_ctx <= max_from_init):
        words = count_words(text)
        if n_ctx > words:
            raise ValueError(f"{key}={n_ctx} exceeds the {words} tokens of CTX_INIT {text!r}")
        if n_ctx < 1:
            raise ValueError(f"{key} must be >= 1, got {n_ctx}")
        return init_context_from_text(clip_model, text, n_ctx), text
    if n_ctx < 1:
        raise ValueError(f"{key} must be >= 1 when CTX_INIT is empty, got {n_ctx}")
    return random_context(n_ctx, text_width(clip_model)), " ".join(["X"] * n_ctx)


def deep_prompt_list(count, n_ctx, width):
    """``count`` independent N(0, 0.02) prompts ``[n_ctx, width]`` (fp32) as an ``nn.ParameterList``."""
    return nn.ParameterList([nn.Parameter(random_context(n_ctx, width)) for _ in range(count)])


def check_prompt_depth(key, depth, n_ctx, layers, minimum=0, ctx_key="N_CTX", what="encoder"):
    """``minimum <= depth <= layers`` and ``n_ctx >= 1`` when the branch is prompted; returns
    ``(depth, n_ctx)`` as ints. ``layers`` 0 (a ResNet image encoder) with ``depth > 0`` is an error."""
    depth, n_ctx = int(depth), int(n_ctx)
    if depth > 0 and layers == 0:
        raise ValueError(f"{key}={depth}: visual prompts need a ViT backbone (MODEL.BACKBONE.NAME ViT-*)")
    if not minimum <= depth <= layers:
        raise ValueError(f"{key} must be in {minimum}..{layers} for this backbone ({layers} {what} layers), "
                         f"got {depth}")
    if depth > 0 and n_ctx < 1:
        raise ValueError(f"{key}={depth} needs at least one prompt token, got {ctx_key}={n_ctx}")
    return depth, n_ctx


# ----------------------------------------------------------------------------- class sentences
class ClassSentences(nn.Module):
    """Fixed token embeddings of the class sentences around ``n_ctx`` learned context positions.

    ``set_sentences(clip_model, classnames, prefix, n_ctx)`` registers ``token_prefix`` [C, 1, D]
    (SOS), ``token_suffix`` [C, 77-1-n, D] (the words after the context, the class name, ``.``,
    EOT, padding) and ``tokenized_prompts`` [C, 77] (non-persistent; locates EOT). The first two
    depend on the class names: never saved, dropped at load (``PromptCLIP.CLASS_DEPENDENT_KEYS``).
    """

    def set_sentences(self, clip_model, classnames, prompt_prefix, n_ctx):
        tokenized, embedding = build_class_prompts(clip_model, classnames, prompt_prefix)
        self.register_buffer("token_prefix", embedding[:, :1, :].clone())
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :].clone())
        self.register_buffer("tokenized_prompts", tokenized.clone(), persistent=False)
        self.n_cls, self.n_ctx = len(classnames), n_ctx

    def assemble(self, ctx=None):
        """Sentence embeddings ``[..., C, 77, D]``, in ``ctx``'s dtype.

        ``ctx``: None (no learned positions), ``[n, D]`` (shared by the classes), ``[C, n, D]``
        (class-specific) or ``[..., C, n, D]`` (e.g. one context per image).
        """
        if ctx is None:
            return torch.cat([self.token_prefix, self.token_suffix], dim=1)
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        lead = ctx.shape[:-3]
        prefix = self.token_prefix.to(ctx.dtype).expand(*lead, -1, -1, -1)
        suffix = self.token_suffix.to(ctx.dtype).expand(*lead, -1, -1, -1)
        return torch.cat([prefix, ctx, suffix], dim=-2)

    def sentence_embeddings(self):
        """``assemble(self.ctx)``: the sentences with the learner's own shallow context (None: none)."""
        return self.assemble(getattr(self, "ctx", None))


# ------------------------------------------------------------------------- fixed text features
@torch.no_grad()
def template_text_features(clip_model, text_encoder, classnames, templates, upstream_numerics=False):
    """``normalize(mean_k normalize(g(T_k(c))))`` over ``templates``: fp32 ``[C, E]``.

    One text-encoder call per template; with a single template this is just its normalised features.
    ``upstream_numerics``: the official arithmetic in the encoder's dtype (a single template is
    normalised once; several are summed one by one, divided by their number and normalised).
    """
    if not templates:
        raise ValueError("at least one prompt template is needed")
    names = [format_classname(name) for name in classnames]
    if upstream_numerics:
        total = 0
        for template in templates:
            tokenized, embedding = embed_texts(clip_model, [template.format(name) for name in names])
            total = total + F.normalize(text_encoder(embedding, tokenized), dim=-1)
        return total if len(templates) == 1 else F.normalize(total / len(templates), dim=-1)
    per_template = []
    for template in templates:
        tokenized, embedding = embed_texts(clip_model, [template.format(name) for name in names])
        per_template.append(F.normalize(text_encoder(embedding, tokenized).float(), dim=-1))
    return F.normalize(torch.stack(per_template).mean(dim=0), dim=-1)


# ------------------------------------------------------------------------------ vision prompts
class VisionPrompts(nn.Module):
    """VPT-deep vision prompts: ``vision_ctx`` (layer 0) and ``vision_prompts[i]`` (block i+1); depth 0 = none."""

    def __init__(self, n_ctx, depth, width):
        super().__init__()
        self.depth = depth
        self.vision_ctx = nn.Parameter(random_context(n_ctx, width)) if depth > 0 else None
        self.vision_prompts = deep_prompt_list(max(depth - 1, 0), n_ctx, width)

    def encode(self, image_encoder, image):
        if self.depth == 0:
            return image_encoder(image)
        return image_encoder(image, shallow_prompt=self.vision_ctx, deep_prompts=list(self.vision_prompts))


_VISION_SHALLOW = re.compile(r"^(?:module\.)?image_encoder\.VPT$")
_BLOCK_PROMPT = re.compile(r"^(?:module\.)?(image|text)_encoder\.transformer\.resblocks\.(\d+)\.VPT_shallow$")


def legacy_prompt_keys(state_dict, vision_prefix="prompt_learner.vision."):
    """Rename the official IVLP/VPT prompt keys (which live inside CLIP's modules) to ours.

    ``image_encoder.VPT`` -> ``<vision_prefix>vision_ctx``;
    ``image_encoder.transformer.resblocks.{i}.VPT_shallow`` -> ``<vision_prefix>vision_prompts.{i-1}``;
    ``text_encoder.transformer.resblocks.{i}.VPT_shallow`` -> ``prompt_learner.text_prompts.{i-1}``.
    Other keys are returned unchanged.
    """
    out = {}
    for key, value in state_dict.items():
        block = _BLOCK_PROMPT.match(key)
        if _VISION_SHALLOW.match(key):
            key = f"{vision_prefix}vision_ctx"
        elif block and block.group(1) == "image":
            key = f"{vision_prefix}vision_prompts.{int(block.group(2)) - 1}"
        elif block:
            key = f"prompt_learner.text_prompts.{int(block.group(2)) - 1}"
        out[key] = value
    return out
