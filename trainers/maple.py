"""MaPLe: multi-modal prompt learning (Khattak et al., CVPR 2023), config node ``TRAINER.MAPLE``.

Language branch (shared with CoMMA, see :func:`build_text_context`):
  ``ctx`` P_t^1 (n x Dt) initialised from the first ``N_CTX`` tokens of ``CTX_INIT`` when it is set
  and ``N_CTX <= 4`` -- the sentence stays the full ``"<CTX_INIT> <class>."`` so the remaining init
  words ("of a") are fixed tokens -- else N(0, 0.02) with the sentence ``"X X <class>."``.
  Deep text prompts P_t^j (j = 2..J, ``PROMPT_DEPTH`` J) are free N(0, 0.02) tensors replacing token
  positions 1..n before text block j.
Vision branch (the "coupling functions"):
  P_v^1 = proj(P_t^1) appended after CLS+patches; P_v^j = F_j(P_t^j) replacing the last n tokens
  before vision block j, with F_j = ``compound_prompt_projections[j-2]``: J-1 deep copies of ONE
  freshly initialised Linear(Dt -> Dv) (identical start, as the official ``_get_clones``).
Widths Dt/Dv come from the loaded backbone. Parameter names equal the official checkpoint's, so
released MaPLe weights load unchanged. ``PROMPT_DEPTH`` 1 = shallow MaPLe (no deep prompts).
Precision: every learned tensor is an fp32 master copy, except ``ctx`` and ``proj`` under
``UPSTREAM_NUMERICS`` True with an fp16 backbone (fp16 parameters updated in fp16, as upstream).
"""
import copy

import torch
import torch.nn as nn

from engine.trainer import TRAINER_REGISTRY
from engine.precision import learned_dtype
from trainers.base import PromptCLIP, PromptTrainer, build_class_prompts, init_context_from_text

#: MaPLe initialises ctx from CTX_INIT only up to this many context tokens (official ``n_ctx <= 4``).
MAX_CTX_FROM_INIT = 4


def encoder_widths(clip_model):
    """``(text width Dt, vision width Dv)`` of a CLIP ViT (read from the model, never hard-coded)."""
    text_width = clip_model.ln_final.weight.shape[0]
    visual = clip_model.visual
    if not hasattr(visual, "class_embedding"):
        raise ValueError(f"multi-modal prompts need a ViT image encoder, got {type(visual).__name__}")
    return text_width, visual.class_embedding.shape[0]


def check_prompt_depth(node_name, node, clip_model):
    """``1 <= PROMPT_DEPTH <= number of blocks`` of both encoders, ``N_CTX >= 1`` (one-line errors)."""
    depth, n_ctx = int(node.PROMPT_DEPTH), int(node.N_CTX)
    layers = min(clip_model.transformer.layers, clip_model.visual.transformer.layers)
    if not 1 <= depth <= layers:
        raise ValueError(f"TRAINER.{node_name}.PROMPT_DEPTH must be in 1..{layers} for this backbone, got {depth}")
    if n_ctx < 1:
        raise ValueError(f"TRAINER.{node_name}.N_CTX must be >= 1, got {n_ctx}")
    return depth, n_ctx


def build_text_context(clip_model, classnames, n_ctx, ctx_init):
    """MaPLe/CoMMA shallow text prompt and class sentences.

    Returns ``(ctx [n, Dt] fp32 initial value, tokenized [C, 77], embedding [C, 77, Dt])``.
    """
    text_width = clip_model.ln_final.weight.shape[0]
    if ctx_init and n_ctx <= MAX_CTX_FROM_INIT:
        prompt_prefix = ctx_init.replace("_", " ")
        ctx = init_context_from_text(clip_model, prompt_prefix, n_ctx)
    else:
        ctx = torch.empty(n_ctx, text_width, dtype=torch.float32)
        nn.init.normal_(ctx, std=0.02)
        prompt_prefix = " ".join(["X"] * n_ctx)
    tokenized, embedding = build_class_prompts(clip_model, classnames, prompt_prefix)
    return ctx, tokenized, embedding


class TextPromptMixin:
    """Shared sentence assembly: ``[SOS] ctx <suffix>`` per class, in the backbone dtype."""

    def _register_sentences(self, tokenized, embedding, n_ctx):
        self.register_buffer("token_prefix", embedding[:, :1, :].clone())  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :].clone())  # words, class, EOT
        self.register_buffer("tokenized_prompts", tokenized.clone(), persistent=False)

    def sentence_embeddings(self):
        """``[C, 77, Dt]`` token embeddings with positions 1..n replaced by ``ctx``."""
        prefix, suffix = self.token_prefix, self.token_suffix
        ctx = self.ctx.to(prefix.dtype).unsqueeze(0).expand(prefix.shape[0], -1, -1)
        return torch.cat([prefix, ctx, suffix], dim=1)


class MultiModalPromptLearner(TextPromptMixin, nn.Module):
    """MaPLe's prompt learner (official name and parameter keys)."""

    def __init__(self, cfg, clip_model, classnames):
        super().__init__()
        node = cfg.TRAINER.MAPLE
        depth, n_ctx = check_prompt_depth("MAPLE", node, clip_model)
        text_width, vision_width = encoder_widths(clip_model)
        ctx, tokenized, embedding = build_text_context(clip_model, classnames, n_ctx, node.CTX_INIT)
        dtype = learned_dtype(clip_model.dtype, node.get("UPSTREAM_NUMERICS", False))  # upstream: proj.half()
        # creation order as upstream (proj, ctx, text prompts, projections): same RNG use per seed
        self.proj = nn.Linear(text_width, vision_width).to(dtype)
        self.ctx = nn.Parameter(ctx.to(dtype))
        self.compound_prompts_text = nn.ParameterList(
            [nn.Parameter(nn.init.normal_(torch.empty(n_ctx, text_width), std=0.02)) for _ in range(depth - 1)]
        )
        single_layer = nn.Linear(text_width, vision_width)
        self.compound_prompt_projections = nn.ModuleList([copy.deepcopy(single_layer) for _ in range(depth - 1)])
        self._register_sentences(tokenized, embedding, n_ctx)
        self.n_ctx, self.depth = n_ctx, depth

    def text_prompts(self):
        """``(sentence embeddings [C, 77, Dt], deep text prompts [J-1 x (n, Dt)])``."""
        return self.sentence_embeddings(), list(self.compound_prompts_text)

    def vision_prompts(self):
        """``(shallow proj(ctx) [n, Dv], deep [F_j(P_t^j)] (J-1 x (n, Dv)))``."""
        deep = [layer(prompt) for layer, prompt in zip(self.compound_prompt_projections, self.compound_prompts_text)]
        return self.proj(self.ctx), deep


class MultiModalCLIP(PromptCLIP):
    """CLIP driven by a multi-modal prompt learner exposing ``text_prompts()``/``vision_prompts()``."""

    def __init__(self, clip_model, classnames, prompt_learner):
        super().__init__(clip_model, classnames)
        self.prompt_learner = prompt_learner

    def encode_prompted_text(self, return_hidden=0, length=None):
        prompts, deep_text = self.prompt_learner.text_prompts()
        return self.text_encoder(prompts, self.prompt_learner.tokenized_prompts, deep_text or None,
                                 return_hidden=return_hidden, length=length)

    def text_features(self):
        return self.encode_prompted_text()

    def image_features(self, image):
        shallow, deep = self.prompt_learner.vision_prompts()
        return self.image_encoder(image.to(self.dtype), shallow, deep or None)


@TRAINER_REGISTRY.register()
class MaPLe(PromptTrainer):
    """MaPLe trainer: CE loss on ``exp(tau) cos(f, g)`` logits; official config node and model name."""

    CFG_NODE = "MAPLE"
    MODEL_NAME = "MultiModalPromptLearner"

    def build_custom_model(self, clip_model, classnames):
        return MultiModalCLIP(clip_model, classnames, MultiModalPromptLearner(self.cfg, clip_model, classnames))
