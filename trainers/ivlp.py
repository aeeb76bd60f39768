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
import torch
import torch.nn as nn

from engine.precision import learned_dtype
from engine.utils.logger import get_logger
from trainers.base import PromptCLIP, PromptTrainer, register_method
from trainers.prompts import (ClassSentences, VisionPrompts, check_prompt_depth, deep_prompt_list, init_context,
                              legacy_prompt_keys, text_width)

logger = get_logger()

METHOD = {
    "key": "ivlp",
    "trainer": "IVLP",
    "node": "IVLP",
    "config": {
        "N_CTX_VISION": 2,
        "N_CTX_TEXT": 2,
        "CTX_INIT": "a photo of a",
        "PREC": "fp16",
        "UPSTREAM_NUMERICS": False,  # True: the official fp16 arithmetic
        "PROMPT_DEPTH_VISION": 9,  # 0 = no vision prompts
        "PROMPT_DEPTH_TEXT": 9,  # 0 = no text prompts
    },
    "checkpoint": "VLPromptLearner",
    # the official scripts train base-to-novel AND cross-dataset with the 2+2 config (the published row)
    "b2n_cfg": "vit_b16_c2_ep5_batch4_2+2ctx",
    "xd_cfg": "vit_b16_c2_ep5_batch4_2+2ctx",
    "order": 50,
}

DEFAULT_CTX_INIT = "a photo of a"
#: the shallow text context is initialised from CTX_INIT only up to this many tokens (official rule)
MAX_CTX_FROM_INIT = 4


class VLPromptLearner(ClassSentences):
    """IVLP's learned tensors: text ``ctx`` + ``text_prompts``, vision ``vision_ctx`` + ``vision_prompts``."""

    def __init__(self, clip_model, classnames, n_ctx_text, n_ctx_vision, ctx_init, depth_text, depth_vision,
                 vision_width, ctx_dtype=torch.float32):
        super().__init__()
        width = text_width(clip_model)
        self.depth_text = depth_text
        if depth_text == 0:
            self.ctx, prompt_prefix, n_ctx = None, (ctx_init or DEFAULT_CTX_INIT).replace("_", " "), 0
        else:
            ctx, prompt_prefix = init_context(clip_model, n_ctx_text, ctx_init, key="N_CTX_TEXT",
                                              max_from_init=MAX_CTX_FROM_INIT)
            self.ctx, n_ctx = nn.Parameter(ctx.to(ctx_dtype)), n_ctx_text
        logger.info(f'Initial text context: "{prompt_prefix}" ({n_ctx} learned tokens, depth {depth_text}); '
                    f"vision: {n_ctx_vision if depth_vision else 0} tokens, depth {depth_vision}")
        self.text_prompts = deep_prompt_list(max(depth_text - 1, 0), n_ctx_text, width)
        self.vision = VisionPrompts(n_ctx_vision, depth_vision, vision_width)
        self.set_sentences(clip_model, classnames, prompt_prefix, n_ctx)

    def forward(self):
        """Class prompt embeddings ``[C, 77, Dt]`` (shallow text context in place)."""
        return self.assemble(self.ctx)


class IVLPCLIP(PromptCLIP):
    """CLIP with independent deep prompts in the text and the vision encoder."""

    #: config node named by the depth errors (subclasses driven by another node override it)
    CFG_KEY = "TRAINER.IVLP"

    def __init__(self, clip_model, classnames, n_ctx_text=2, n_ctx_vision=2, ctx_init=DEFAULT_CTX_INIT,
                 depth_text=9, depth_vision=9, upstream_numerics=False):
        super().__init__(clip_model, classnames)
        check_prompt_depth(f"{self.CFG_KEY}.PROMPT_DEPTH_TEXT", depth_text, n_ctx_text, self.text_encoder.layers,
                           ctx_key="N_CTX_TEXT", what="text")
        check_prompt_depth(f"{self.CFG_KEY}.PROMPT_DEPTH_VISION", depth_vision, n_ctx_vision,
                           self.image_encoder.layers, ctx_key="N_CTX_VISION", what="vision")
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


@register_method(METHOD)
class IVLP(PromptTrainer):
    """IVLP trainer (``TRAINER.IVLP``); registers the whole model as ``VLPromptLearner`` (as upstream)."""

    def build_custom_model(self, clip_model, classnames):
        node = self.cfg.TRAINER[self.CFG_NODE]
        return IVLPCLIP(clip_model, classnames, n_ctx_text=node.N_CTX_TEXT, n_ctx_vision=node.N_CTX_VISION,
                        ctx_init=node.CTX_INIT, depth_text=node.PROMPT_DEPTH_TEXT,
                        depth_vision=node.PROMPT_DEPTH_VISION, upstream_numerics=self.upstream_numerics)
