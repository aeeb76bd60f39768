"""MaPLe: multi-modal prompt learning (Khattak et al., CVPR 2023), config node ``TRAINER.MAPLE``.

Language branch (shared with CoMMA, see :func:`text_context`):
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

import torch.nn as nn

from engine.precision import learned_dtype
from trainers.base import PromptCLIP, PromptTrainer, register_method
from trainers.prompts import ClassSentences, check_prompt_depth, deep_prompt_list, encoder_widths, init_context

METHOD = {
    "key": "maple",
    "trainer": "MaPLe",
    "node": "MAPLE",
    "config": {
        "N_CTX": 2,
        "CTX_INIT": "a photo of a",
        "PREC": "fp16",
        "UPSTREAM_NUMERICS": False,  # True: the official fp16 arithmetic
        "PROMPT_DEPTH": 9,  # max 12, min 1 (1 = shallow MaPLe)
    },
    "checkpoint": "MultiModalPromptLearner",
    "b2n_cfg": "vit_b16_c2_ep5_batch4_2ctx",
    "xd_cfg": "vit_b16_c2_ep5_batch4_2ctx_cross_datasets",
    "order": 60,
}

#: MaPLe initialises ctx from CTX_INIT only up to this many context tokens (official ``n_ctx <= 4``).
MAX_CTX_FROM_INIT = 4


def check_depth(node_name, node, clip_model):
    """``1 <= PROMPT_DEPTH <=`` blocks of both encoders and ``N_CTX >= 1``: ``(depth, n_ctx)``."""
    layers = min(clip_model.transformer.layers, clip_model.visual.transformer.layers)
    return check_prompt_depth(f"TRAINER.{node_name}.PROMPT_DEPTH", node.PROMPT_DEPTH, node.N_CTX, layers,
                              minimum=1, ctx_key=f"TRAINER.{node_name}.N_CTX")


def text_context(clip_model, node_name, n_ctx, ctx_init):
    """MaPLe's shallow text prompt: ``(ctx [n, Dt] fp32, sentence prefix)`` (:func:`init_context`
    with the official limit of 4 tokens initialised from ``CTX_INIT``)."""
    return init_context(clip_model, n_ctx, ctx_init, key=f"TRAINER.{node_name}.N_CTX",
                        max_from_init=MAX_CTX_FROM_INIT)


class MultiModalPromptLearner(ClassSentences):
    """MaPLe's prompt learner (official name and parameter keys)."""

    NODE = "MAPLE"

    def __init__(self, cfg, clip_model, classnames):
        super().__init__()
        node = cfg.TRAINER[self.NODE]
        depth, n_ctx = check_depth(self.NODE, node, clip_model)
        text_width, vision_width = encoder_widths(clip_model)
        ctx, prompt_prefix = text_context(clip_model, self.NODE, n_ctx, node.CTX_INIT)
        dtype = learned_dtype(clip_model.dtype, node.get("UPSTREAM_NUMERICS", False))  # upstream: proj.half()
        # creation order as upstream (proj, ctx, text prompts, projections): same RNG use per seed
        self.proj = nn.Linear(text_width, vision_width).to(dtype)
        self.ctx = nn.Parameter(ctx.to(dtype))
        self.compound_prompts_text = deep_prompt_list(depth - 1, n_ctx, text_width)
        single_layer = nn.Linear(text_width, vision_width)
        self.compound_prompt_projections = nn.ModuleList([copy.deepcopy(single_layer) for _ in range(depth - 1)])
        self.set_sentences(clip_model, classnames, prompt_prefix, n_ctx)
        self.depth = depth

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


@register_method(METHOD)
class MaPLe(PromptTrainer):
    """MaPLe trainer: CE loss on ``exp(tau) cos(f, g)`` logits; official config node and model name."""

    def build_custom_model(self, clip_model, classnames):
        return MultiModalCLIP(clip_model, classnames, MultiModalPromptLearner(self.cfg, clip_model, classnames))
