"""Independent vision-language prompting (IVLP, MaPLe repo ``independentVL.py``): deep prompts in
both encoders, learned independently (no coupling, unlike MaPLe).

Text: ``[SOS][P^t_0][rest of "<CTX_INIT> <class>."]`` with the shallow context ``P^t_0``
([N_CTX_TEXT, Dt]; from the first N_CTX_TEXT words of CTX_INIT when set and N_CTX_TEXT <= 4, the
remaining init words staying fixed tokens -- MaPLe's rule; else N(0, 0.02) and "X .. X <class>.")
and ``P^t_i`` (N(0, 0.02)) replacing positions ``1..N_CTX_TEXT`` before text blocks ``i = 1..J_t-1``.
Vision: ``P^v_0`` ([N_CTX_VISION, Dv], N(0, 0.02)) appended after CLS+patches (before ``ln_pre``)
and ``P^v_i`` replacing those last tokens before vision blocks ``i = 1..J_v-1``.
``p(y=c|x) = softmax_c(exp(s) cos(f(x; P^v), g(t_c; P^t)))``.

Config node ``TRAINER.IVLP``: ``N_CTX_TEXT``, ``N_CTX_VISION``, ``CTX_INIT``, ``PROMPT_DEPTH_TEXT``
(J_t), ``PROMPT_DEPTH_VISION`` (J_v), ``PREC``. Depth 0 means no prompts in that branch (the
official code requires J_t >= 1; with J_t = 0 the text side is the fixed prompt
"<CTX_INIT or 'a photo of a'> <class>."). Registered as ``VLPromptLearner`` (whole model, as upstream).
Learned tensors: ``prompt_learner.{ctx, text_prompts.i, vision.vision_ctx, vision.vision_prompts.i}``; the
official ``VPT``/``VPT_shallow`` names inside CLIP blocks are mapped by ``legacy_prompt_keys``.
Precision: fp32 master copies, except the shallow text ``ctx`` under ``UPSTREAM_NUMERICS`` True with an
fp16 backbone (an fp16 parameter, as upstream, which builds it in CLIP's dtype).
"""
import re

import torch
import torch.nn as nn

from engine.precision import learned_dtype
from engine.trainer import TRAINER_REGISTRY
from engine.utils.logger import get_logger
from trainers.base import PromptCLIP, PromptTrainer, build_class_prompts, count_words, init_context_from_text
from trainers.coop import random_context

logger = get_logger()

DEFAULT_CTX_INIT = "a photo of a"


def check_depth(key, depth, n_ctx, layers):
    """Validate ``PROMPT_DEPTH_*`` (0..layers) and that a prompted branch has ``N_CTX_* >= 1``."""
    if depth > 0 and layers == 0:
        raise ValueError(f"{key}={depth}: visual prompts need a ViT backbone (MODEL.BACKBONE.NAME ViT-*)")
    if not 0 <= depth <= layers:
        raise ValueError(f"{key} must be between 0 and the encoder's {layers} layers, got {depth}")
    if depth > 0 and n_ctx < 1:
        raise ValueError(f"{key}={depth} needs at least one prompt token, got N_CTX={n_ctx}")


def deep_prompt_list(count, n_ctx, width):
    """``count`` independent N(0, 0.02) prompts of shape ``[n_ctx, width]`` (fp32)."""
    return nn.ParameterList([nn.Parameter(random_context(n_ctx, width)) for _ in range(count)])


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


class VLPromptLearner(nn.Module):
    """IVLP's learned tensors: text ``ctx`` + ``text_prompts``, vision ``vision_ctx`` + ``vision_prompts``."""

    def __init__(self, clip_model, classnames, n_ctx_text, n_ctx_vision, ctx_init, depth_text, depth_vision,
                 vision_width, ctx_dtype=torch.float32):
        super().__init__()
        text_width = clip_model.ln_final.weight.shape[0]
        self.depth_text = depth_text
        self.n_ctx = n_ctx_text if depth_text > 0 else 0
        if depth_text == 0:
            self.ctx, prompt_prefix = None, (ctx_init or DEFAULT_CTX_INIT).replace("_", " ")
        elif ctx_init and n_ctx_text <= 4:
            prompt_prefix = ctx_init.replace("_", " ")
            if n_ctx_text > count_words(prompt_prefix):
                raise ValueError(f"N_CTX_TEXT={n_ctx_text} exceeds the {count_words(prompt_prefix)} tokens "
                                 f"of CTX_INIT {prompt_prefix!r}")
            self.ctx = nn.Parameter(init_context_from_text(clip_model, prompt_prefix, n_ctx_text).to(ctx_dtype))
        else:
            prompt_prefix = " ".join(["X"] * n_ctx_text)
            self.ctx = nn.Parameter(random_context(n_ctx_text, text_width).to(ctx_dtype))
        logger.info(f'Initial text context: "{prompt_prefix}" ({self.n_ctx} learned tokens, depth {depth_text}); '
                    f"vision: {n_ctx_vision if depth_vision else 0} tokens, depth {depth_vision}")
        self.text_prompts = deep_prompt_list(max(depth_text - 1, 0), n_ctx_text, text_width)
        self.vision = VisionPrompts(n_ctx_vision, depth_vision, vision_width)

        tokenized, embedding = build_class_prompts(clip_model, classnames, prompt_prefix)
        self.register_buffer("token_prefix", embedding[:, :1, :].clone())
        self.register_buffer("token_suffix", embedding[:, 1 + self.n_ctx:, :].clone())
        self.register_buffer("tokenized_prompts", tokenized, persistent=False)

    def forward(self):
        """Class prompt embeddings ``[C, 77, Dt]`` (shallow text context in place)."""
        if self.ctx is None:
            return torch.cat([self.token_prefix, self.token_suffix], dim=1)
        n_cls = self.token_prefix.shape[0]
        ctx = self.ctx.unsqueeze(0).expand(n_cls, -1, -1)
        dtype = ctx.dtype
        return torch.cat([self.token_prefix.to(dtype), ctx, self.token_suffix.to(dtype)], dim=1)


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


class IVLPCLIP(PromptCLIP):
    """CLIP with independent deep prompts in the text and the vision encoder."""

    def __init__(self, clip_model, classnames, n_ctx_text=2, n_ctx_vision=2, ctx_init=DEFAULT_CTX_INIT,
                 depth_text=9, depth_vision=9, upstream_numerics=False):
        super().__init__(clip_model, classnames)
        check_depth("TRAINER.IVLP.PROMPT_DEPTH_TEXT", depth_text, n_ctx_text, self.text_encoder.layers)
        check_depth("TRAINER.IVLP.PROMPT_DEPTH_VISION", depth_vision, n_ctx_vision, self.image_encoder.layers)
        self.prompt_learner = VLPromptLearner(clip_model, classnames, n_ctx_text, n_ctx_vision, ctx_init,
                                              depth_text, depth_vision, self.image_encoder.width,
                                              ctx_dtype=learned_dtype(clip_model.dtype, upstream_numerics))

    def text_features(self):
        learner = self.prompt_learner
        deep = list(learner.text_prompts) or None
        return self.text_encoder(learner(), learner.tokenized_prompts, deep_prompts=deep)

    def image_features(self, image):
        return self.prompt_learner.vision.encode(self.image_encoder, image)

    def load_legacy_state_dict(self, state_dict):
        return legacy_prompt_keys(state_dict)


@TRAINER_REGISTRY.register()
class IVLP(PromptTrainer):
    """IVLP trainer (``TRAINER.IVLP``); registers the whole model as ``VLPromptLearner`` (as upstream)."""

    CFG_NODE = "IVLP"
    MODEL_NAME = "VLPromptLearner"

    def build_custom_model(self, clip_model, classnames):
        node = self.cfg.TRAINER.IVLP
        return IVLPCLIP(clip_model, classnames, n_ctx_text=node.N_CTX_TEXT, n_ctx_vision=node.N_CTX_VISION,
                        ctx_init=node.CTX_INIT, depth_text=node.PROMPT_DEPTH_TEXT,
                        depth_vision=node.PROMPT_DEPTH_VISION, upstream_numerics=self.upstream_numerics)
