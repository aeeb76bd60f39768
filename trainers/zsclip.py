"""Zero-shot CLIP (Radford et al. 2021) with hand-crafted prompts: nothing is learned.

``ZeroshotCLIP``: class ``c`` is represented by ``g("<template>".format(c))`` with the per-dataset
template ``template_for(cfg, ZEROSHOT_TEMPLATES)`` (``DATASET.TEMPLATE`` overrides it).
``ZeroshotCLIP2``: prompt ensemble ``t_c = normalize(mean_k normalize(g(T_k(c))))`` over the 7
``IMAGENET_TEMPLATES_SELECT`` (+ the dataset template for every dataset except ImageNet), as the
CoOp repo, but built per instance (the official class-level ``+=`` doubled the list on a second
instance). Text features are computed once, when the model is built.

Config node ``TRAINER.ZSCLIP`` (``PREC``, ``UPSTREAM_NUMERICS``: text features, normalisation and
logits in the backbone dtype with the official running sum over templates, instead of fp32).
Nothing is trainable, so no model is registered and nothing is saved or loaded: ``--eval-only``
evaluates it (``--model-dir`` is ignored) and a training request logs that there is nothing to
train and runs the evaluation instead (both handled by the engine).
"""
import torch.nn as nn

from engine.utils.logger import get_logger
from engine.trainer import TRAINER_REGISTRY
from trainers.base import PromptCLIP, PromptTrainer, register_method
from trainers.prompts import template_text_features
from trainers.templates import IMAGENET_TEMPLATES_SELECT, ZEROSHOT_TEMPLATES, template_for

logger = get_logger()

METHOD = {
    "key": "zsclip",
    "trainer": "ZeroshotCLIP",
    "node": "ZSCLIP",
    "aliases": ("CLIP", "ZeroShotCLIP", "zeroshot"),
    "config": {
        "PREC": "fp16",
        "UPSTREAM_NUMERICS": False,  # True: the official fp16 arithmetic
    },
    "checkpoint": None,  # nothing is learned: nothing is saved or loaded
    "config_dir": "CoOp",  # the CoOp repo's scripts/zsclip run with configs/trainers/CoOp/vit_b16.yaml
    "b2n_cfg": "vit_b16",
    "xd_cfg": "vit_b16",
    "zero_shot": True,
    "order": 0,
}


class ZeroshotCLIPModel(PromptCLIP):
    """Frozen CLIP with fixed class text features from ``templates`` (computed once, at build)."""

    def __init__(self, clip_model, classnames, templates, upstream_numerics=False):
        super().__init__(clip_model, classnames)
        self.prompt_learner = nn.Module()  # nothing learned
        self.templates = tuple(templates)
        fixed = template_text_features(clip_model, self.text_encoder, classnames, self.templates, upstream_numerics)
        self.register_buffer("fixed_text_features", fixed, persistent=False)

    def text_features(self):
        return self.fixed_text_features

    def image_features(self, image):
        return self.image_encoder(image)


@register_method(METHOD)
class ZeroshotCLIP(PromptTrainer):
    """Zero-shot CLIP with the dataset's single hand-crafted template (``TRAINER.ZSCLIP``).

    The model has no trainable tensor, so ``PromptTrainer`` registers none and the engine evaluates
    it instead of training it and ignores ``--model-dir``.
    """

    MODEL_NAME = "zeroshot_clip"
    CACHE_TEXT_AT_EVAL = False  # the fixed features are the cache

    def templates(self):
        return [template_for(self.cfg, ZEROSHOT_TEMPLATES)]

    def build_custom_model(self, clip_model, classnames):
        templates = self.templates()
        if len(templates) == 1:
            logger.info(f'Prompt template: "{templates[0]}"')
        else:
            logger.info(f"Prompt ensembling (n={len(templates)}): {templates}")
        return ZeroshotCLIPModel(clip_model, classnames, templates, upstream_numerics=self.upstream_numerics)


@TRAINER_REGISTRY.register()
class ZeroshotCLIP2(ZeroshotCLIP):
    """Zero-shot CLIP with the 7-template ImageNet ensemble (+ the dataset template outside ImageNet)."""

    def templates(self):
        templates = list(IMAGENET_TEMPLATES_SELECT)
        if self.cfg.DATASET.NAME != "ImageNet":
            templates.append(template_for(self.cfg, ZEROSHOT_TEMPLATES))
        return templates
