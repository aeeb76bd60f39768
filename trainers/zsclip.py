"""Zero-shot CLIP (Radford et al. 2021) with hand-crafted prompts: nothing is learned.

``ZeroshotCLIP``: class ``c`` is represented by ``g("<template>".format(c))`` with the per-dataset
template ``template_for(cfg, ZEROSHOT_TEMPLATES)`` (``DATASET.TEMPLATE`` overrides it).
``ZeroshotCLIP2``: prompt ensemble ``t_c = normalize(mean_k normalize(g(T_k(c))))`` over the 7
``IMAGENET_TEMPLATES_SELECT`` (+ the dataset template for every dataset except ImageNet), as the
CoOp repo, but built per instance (the official class-level ``+=`` doubled the list on a second
instance). Text features are computed once, when the model is built.

Config node ``TRAINER.ZSCLIP`` (``PREC``, ``UPSTREAM_NUMERICS``: text features, normalisation and
logits in the backbone dtype with the official running sum over templates, instead of fp32).
No model is registered, so nothing is saved or loaded:
``--eval-only`` evaluates it (``--model-dir`` is ignored) and a training request logs that there is
nothing to train and runs the evaluation instead.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.trainer import TRAINER_REGISTRY
from engine.utils.logger import get_logger
from trainers.base import PromptCLIP, PromptTrainer, embed_texts
from trainers.templates import IMAGENET_TEMPLATES_SELECT, ZEROSHOT_TEMPLATES, format_classname, template_for

logger = get_logger()


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


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(PromptTrainer):
    """Zero-shot CLIP with the dataset's single hand-crafted template (``TRAINER.ZSCLIP``)."""

    CFG_NODE = "ZSCLIP"
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

    def register_model(self, name="model", model=None, optim=None, sched=None):
        """Nothing is learned, so nothing is registered (no checkpoint is written or read)."""
        logger.info(f"{type(self).__name__} registers no model: nothing to save or load")

    def train(self, start_epoch=None, max_epoch=None):
        """There is nothing to train: log it and evaluate instead."""
        logger.info(f"{type(self).__name__} has nothing to train; evaluating the zero-shot model instead")
        return self.test()

    def load_model(self, directory, epoch=None):
        if directory:
            logger.info(f"{type(self).__name__} has no learned weights: --model-dir {directory} is ignored")


@TRAINER_REGISTRY.register()
class ZeroshotCLIP2(ZeroshotCLIP):
    """Zero-shot CLIP with the 7-template ImageNet ensemble (+ the dataset template outside ImageNet)."""

    def templates(self):
        templates = list(IMAGENET_TEMPLATES_SELECT)
        if self.cfg.DATASET.NAME != "ImageNet":
            templates.append(template_for(self.cfg, ZEROSHOT_TEMPLATES))
        return templates
