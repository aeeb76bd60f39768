"""Visual prompt tuning on CLIP (VPT, Jia et al. 2022; MaPLe repo ``vpt.py``): vision prompts only.

Vision: ``P_0`` ([N_CTX_VISION, Dv], N(0, 0.02)) appended after CLS+patches (before ``ln_pre``) and,
for ``PROMPT_DEPTH_VISION`` J > 1 (VPT-deep), ``P_i`` replacing those tokens before vision blocks
``i = 1..J-1``; J = 1 is VPT-shallow. Text: fixed features of the hand-crafted prompt
``"a photo of a {}."`` (the official hard-codes it; ``DATASET.TEMPLATE`` overrides it here),
computed once when the model is built. ``p(y=c|x) = softmax_c(exp(s) cos(f(x; P), g_c))``.

Config node ``TRAINER.VPT``: ``N_CTX_VISION``, ``PROMPT_DEPTH_VISION`` (>= 1), ``PREC``;
``CTX_INIT`` exists for YAML compatibility and is unused (as upstream). Registered as
``prompt_learner`` (whole model, as upstream); learned tensors ``prompt_learner.vision_ctx`` and
``prompt_learner.vision_prompts.i`` (official ``image_encoder.VPT`` /
``image_encoder.transformer.resblocks.{i}.VPT_shallow``, mapped at load).
``UPSTREAM_NUMERICS`` True: ``PREC fp16`` runs as fp32, because the official ``vpt.py`` returns
``model.float()`` from ``load_clip_to_cpu`` (its backbone is fp32 whatever ``PREC`` says).
"""
from engine.utils.logger import get_logger
from trainers.base import PromptCLIP, PromptTrainer, register_method, upstream_numerics_enabled
from trainers.prompts import VisionPrompts, check_prompt_depth, legacy_prompt_keys, template_text_features
from trainers.templates import template_for

METHOD = {
    "key": "vpt",
    "trainer": "VPT",
    "node": "VPT",
    "config": {
        "N_CTX_VISION": 2,
        "CTX_INIT": "a photo of a",
        "PREC": "fp16",
        "UPSTREAM_NUMERICS": False,  # True: the official fp16 arithmetic
        "PROMPT_DEPTH_VISION": 1,  # 1 = shallow VPT
    },
    "checkpoint": "prompt_learner",
    "b2n_cfg": "vit_b16_c2_ep5_batch4_4",
    "xd_cfg": "vit_b16_c2_ep5_batch4_4",
    "prec": "fp32",  # the official vpt.py casts CLIP to fp32 whatever PREC says
    "order": 40,
}


class VPTCLIP(PromptCLIP):
    """CLIP with deep vision prompts and fixed hand-crafted class text features."""

    def __init__(self, clip_model, classnames, n_ctx_vision=2, depth_vision=1, template="a photo of a {}.",
                 upstream_numerics=False):
        super().__init__(clip_model, classnames)
        check_prompt_depth("TRAINER.VPT.PROMPT_DEPTH_VISION", depth_vision, n_ctx_vision, self.image_encoder.layers,
                           minimum=1, ctx_key="TRAINER.VPT.N_CTX_VISION", what="vision")
        self.prompt_learner = VisionPrompts(n_ctx_vision, depth_vision, self.image_encoder.width)
        self.template = template
        fixed = template_text_features(clip_model, self.text_encoder, classnames, [template], upstream_numerics)
        self.register_buffer("fixed_text_features", fixed, persistent=False)

    def text_features(self):
        return self.fixed_text_features

    def image_features(self, image):
        return self.prompt_learner.encode(self.image_encoder, image)

    def load_legacy_state_dict(self, state_dict):
        return legacy_prompt_keys(state_dict, vision_prefix="prompt_learner.")


@register_method(METHOD)
class VPT(PromptTrainer):
    """VPT trainer (``TRAINER.VPT``); registers the whole model as ``prompt_learner`` (as upstream)."""

    CACHE_TEXT_AT_EVAL = False  # the fixed features are the cache

    @classmethod
    def prec_name(cls, cfg):
        """``PREC``, except ``fp16`` with ``UPSTREAM_NUMERICS`` True runs fp32 (upstream's ``model.float()``)."""
        prec = super().prec_name(cfg)
        if prec == "fp16" and upstream_numerics_enabled(cfg, cls.CFG_NODE):
            get_logger().info("TRAINER.VPT.UPSTREAM_NUMERICS: PREC fp16 runs as fp32, as the official vpt.py "
                              "(its load_clip_to_cpu returns model.float())")
            return "fp32"
        return prec

    def build_custom_model(self, clip_model, classnames):
        node = self.cfg.TRAINER[self.CFG_NODE]
        return VPTCLIP(clip_model, classnames, n_ctx_vision=node.N_CTX_VISION,
                       depth_vision=node.PROMPT_DEPTH_VISION, template=template_for(self.cfg, {}),
                       upstream_numerics=self.upstream_numerics)
