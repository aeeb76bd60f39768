"""PromptSRC (Khattak et al., ICCV 2023): IVLP's independent deep prompts, self-regulated.

Model: IVLP (``trainers.ivlp``): learned text context ``P^t`` and vision prompts ``P^v``, inserted
in the first ``PROMPT_DEPTH_TEXT`` / ``PROMPT_DEPTH_VISION`` blocks. Frozen CLIP (the same encoders
without prompts) gives the teacher: text ``g~_c = normalize(mean_k g(T_k(c)))`` over the 60
ImageNet templates ``T_k`` (the textual-diversity ensemble, used for every dataset as upstream;
the mean is over the un-normalised features) and image ``f~ = normalize(f(x))``.

Objective (one batch of ``B`` images, ``C`` classes, prompted features ``f^p, g^p`` normalised,
``z = exp(s) f^p g^p^T`` and ``z~ = exp(s) f~ g~^T``)::

    L = CE(z, y) + L_kl + TEXT_LOSS_WEIGHT * mean|g^p - g~| + IMAGE_LOSS_WEIGHT * mean|f^p - f~|
    L_kl = (1 / (B*C)) * sum_{b,c} softmax(z~)_bc * (log softmax(z~)_bc - log softmax(z)_bc)

(temperature 1; the L1 means are over all ``C*E`` and ``B*E`` elements, as ``F.l1_loss``).

Gaussian prompt aggregation (GPA): epoch ``e = 1..E`` (``E = OPTIM.MAX_EPOCH``) gets the weight
``w_e = N(e; GPA_MEAN, GPA_STD) / sum_e' N(e'; GPA_MEAN, GPA_STD)``; after each epoch the learned
tensors are added to a running sum ``S += w_e * P_e``; after the last epoch ``S`` replaces the
prompts, so the last checkpoint holds ``S`` and the final evaluation uses it (as upstream).
Checkpoints written before the last epoch also hold ``S`` (keys ``gpa_sum.<tensor>``), so
``--resume`` continues the same aggregate; they are ignored when a checkpoint is loaded for evaluation.

Config node ``TRAINER.PROMPTSRC``: ``N_CTX_VISION``, ``N_CTX_TEXT``, ``CTX_INIT``, ``PREC``,
``PROMPT_DEPTH_VISION``, ``PROMPT_DEPTH_TEXT``, ``TEXT_LOSS_WEIGHT``, ``IMAGE_LOSS_WEIGHT``,
``GPA_MEAN``, ``GPA_STD``, ``UPSTREAM_NUMERICS``. Registered as ``VLPromptLearner`` (whole model,
as upstream); the official checkpoints' prompt keys are mapped as IVLP's, and their frozen copy of
CLIP's image encoder (``prompt_learner.ZS_image_encoder.*``) is ignored.
"""
import math

import torch
import torch.nn.functional as F

from engine.utils.logger import get_logger
from trainers.base import PromptTrainer, register_method
from trainers.ivlp import IVLPCLIP
from trainers.prompts import embed_texts
from trainers.templates import format_classname

logger = get_logger()

METHOD = {
    "key": "promptsrc",
    "trainer": "PromptSRC",
    "node": "PROMPTSRC",
    "config": {
        "N_CTX_VISION": 4,  # vision prompt tokens per prompted layer
        "N_CTX_TEXT": 4,  # text context tokens per prompted layer
        "CTX_INIT": "a photo of a",  # initial words of the shallow text context
        "PREC": "fp16",  # fp16, fp32, bf16, amp
        "UPSTREAM_NUMERICS": False,  # True: the official fp16 arithmetic
        "PROMPT_DEPTH_VISION": 9,  # J_v: vision prompts in the first J_v blocks (0 = none)
        "PROMPT_DEPTH_TEXT": 9,  # J_t: text prompts in the first J_t blocks (0 = none)
        "TEXT_LOSS_WEIGHT": 25.0,  # lambda_1 of the L1 text-feature loss
        "IMAGE_LOSS_WEIGHT": 10.0,  # lambda_2 of the L1 image-feature loss
        "GPA_MEAN": 15.0,  # mean (in epochs) of the Gaussian prompt-aggregation weights
        "GPA_STD": 1.0,  # standard deviation (in epochs) of the GPA weights
    },
    "checkpoint": "VLPromptLearner",
    "b2n_cfg": "vit_b16_c2_ep20_batch4_4+4ctx",
    "xd_cfg": "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets",
    "fewshot_cfg": "vit_b16_c2_ep50_batch4_4+4ctx_few_shot",
    "order": 80,
}

#: the 60-template ImageNet ensemble of PromptSRC's textual diversity (OpenAI CLIP's prompt list).
IMAGENET_TEMPLATES = (
    "a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "the embroidered {}.", "a photo of a hard to see {}.", "a bright photo of a {}.",
    "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.",
    "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.",
    "a doodle of a {}.", "a close-up photo of the {}.", "the origami {}.", "the {} in a video game.",
    "a sketch of a {}.", "a doodle of the {}.", "a origami {}.", "a low resolution photo of a {}.",
    "the toy {}.", "a rendition of the {}.", "a photo of the clean {}.", "a photo of a large {}.",
    "a rendition of a {}.", "a photo of a nice {}.", "a photo of a weird {}.", "a blurry photo of a {}.",
    "a cartoon {}.", "art of a {}.", "a sketch of the {}.", "a embroidered {}.",
    "a pixelated photo of a {}.", "itap of the {}.",
)

GPA_KEY_PREFIX = "gpa_sum."


# ------------------------------------------------------------------------------------ equations
def gaussian_weights(n_epochs, mean, std):
    """GPA weights ``w_e = N(e; mean, std) / sum_e' N(e'; mean, std)`` for ``e = 1..n_epochs`` (floats).

    Computed from the log-densities (shifted by their maximum), so epochs far in the Gaussian's tail
    never make the normalisation 0/0: with every epoch in the tail the nearest one gets the weight.
    """
    if n_epochs < 1:
        raise ValueError(f"OPTIM.MAX_EPOCH must be >= 1 for Gaussian prompt aggregation, got {n_epochs}")
    if not std > 0:
        raise ValueError(f"TRAINER.PROMPTSRC.GPA_STD must be > 0, got {std}")
    log_density = [-0.5 * ((e - mean) / std) ** 2 for e in range(1, n_epochs + 1)]
    top = max(log_density)
    density = [math.exp(v - top) for v in log_density]  # the common factor 1/(std*sqrt(2*pi)) cancels
    total = sum(density)
    return [d / total for d in density]


def self_regulating_terms(logits, zs_logits, text, zs_text, image, zs_image):
    """PromptSRC's mutual-agreement terms (unweighted), each a scalar tensor.

    ``text`` [C, E] / ``image`` [B, E]: normalised prompted features; ``zs_*``: the frozen model's.
    ``l1_text = mean|text - zs_text|``, ``l1_image = mean|image - zs_image|``,
    ``kl = sum(p~ * (log p~ - log p)) / logits.numel()`` with ``p = softmax(logits)``,
    ``p~ = softmax(zs_logits)`` (temperature 1).
    """
    l1_text = F.l1_loss(text, zs_text, reduction="mean")
    l1_image = F.l1_loss(image, zs_image, reduction="mean")
    kl = F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(zs_logits, dim=1), reduction="sum",
                  log_target=True) / logits.numel()
    return {"l1_text": l1_text, "l1_image": l1_image, "kl": kl}


@torch.no_grad()
def ensemble_text_features(clip_model, text_encoder, classnames, templates):
    """``mean_k g(T_k(c))`` over ``templates`` (un-normalised, fp32 ``[C, E]``), frozen text encoder.

    ``clip_model``: anything with CLIP's ``token_embedding`` and ``dtype``; one encoder call per template.
    """
    names = [format_classname(name) for name in classnames]
    total = None
    for template in templates:
        tokenized, embedding = embed_texts(clip_model, [template.format(name) for name in names])
        features = text_encoder(embedding, tokenized).float()
        total = features if total is None else total + features
    return total / len(templates)


# ------------------------------------------------------------------------------------ the model
class PromptSRCCLIP(IVLPCLIP):
    """IVLP with PromptSRC's objective (``compute_loss``) against the frozen CLIP it is built on."""

    CFG_KEY = "TRAINER.PROMPTSRC"

    def __init__(self, clip_model, classnames, n_ctx_text=4, n_ctx_vision=4, ctx_init="a photo of a",
                 depth_text=9, depth_vision=9, text_loss_weight=25.0, image_loss_weight=10.0,
                 templates=IMAGENET_TEMPLATES, upstream_numerics=False):
        super().__init__(clip_model, classnames, n_ctx_text, n_ctx_vision, ctx_init, depth_text, depth_vision,
                         upstream_numerics)
        self.text_loss_weight = float(text_loss_weight)
        self.image_loss_weight = float(image_loss_weight)
        self.templates = tuple(templates)
        if not self.templates:
            raise ValueError("PromptSRC needs at least one template for the frozen text features")
        self.token_embedding = clip_model.token_embedding  # frozen; tokens of the teacher's templates
        self._frozen_text = None

    def frozen_text_features(self):
        """Teacher text features ``normalize(mean_k g(T_k(c)))`` ``[C, E]`` fp32 (computed once, no prompts)."""
        if self._frozen_text is None:
            mean = ensemble_text_features(self, self.text_encoder, self.classnames, self.templates)
            self._frozen_text = F.normalize(mean, dim=-1)
            logger.info(f"Frozen CLIP text features: mean over {len(self.templates)} templates for "
                        f"{len(self.classnames)} classes")
        return self._frozen_text

    def frozen_image_features(self, image):
        """Teacher image features ``f(x)`` of the frozen image encoder (no prompts), un-normalised."""
        with torch.no_grad():
            return self.image_encoder(image)

    def _normalize(self, x):
        return F.normalize(x if self.upstream_numerics else x.float(), dim=-1)

    def loss_terms(self, image, label):
        """``(logits, {"ce", "kl", "l1_text", "l1_image"})`` for a batch (the unweighted terms)."""
        image_features, text_features = self.forward_features(image)
        logits = self.logits_from(image_features, text_features)
        text = self._normalize(text_features)
        img = self._normalize(image_features)
        with torch.no_grad():
            zs_text = self.frozen_text_features()
            zs_image = self._normalize(self.frozen_image_features(image))
            # upstream numerics: teacher logits in the backbone dtype (the L1 target stays fp32, as upstream)
            zs_logits = self.logits_from(zs_image, zs_text.to(zs_image.dtype), normalized_text=True)
        terms = self_regulating_terms(logits, zs_logits, text, zs_text, img, zs_image)
        terms["ce"] = F.cross_entropy(logits, label)
        return logits, terms

    def compute_loss(self, image, label):
        """``CE + KL + TEXT_LOSS_WEIGHT * L1_text + IMAGE_LOSS_WEIGHT * L1_image`` (module docstring)."""
        logits, terms = self.loss_terms(image, label)
        loss = (terms["ce"] + terms["kl"] + self.text_loss_weight * terms["l1_text"]
                + self.image_loss_weight * terms["l1_image"])
        return loss, self.loss_summary(loss, logits, label, loss_ce=terms["ce"].item(), loss_kl=terms["kl"].item(),
                                       loss_text=terms["l1_text"].item(), loss_image=terms["l1_image"].item())

    def load_legacy_state_dict(self, state_dict):
        frozen = [k for k in state_dict if "prompt_learner.ZS_image_encoder." in k]
        for key in frozen:
            state_dict.pop(key)
        if frozen:
            logger.info(f"Ignoring {len(frozen)} tensors of the official checkpoint's frozen image encoder copy "
                        "(prompt_learner.ZS_image_encoder; the frozen CLIP is the backbone itself)")
        return super().load_legacy_state_dict(state_dict)


# ---------------------------------------------------------------------------------- the trainer
@register_method(METHOD)
class PromptSRC(PromptTrainer):
    """PromptSRC trainer (``TRAINER.PROMPTSRC``): the self-regulating loss and GPA over the epochs."""

    def build_custom_model(self, clip_model, classnames):
        node = self.cfg.TRAINER.PROMPTSRC
        return PromptSRCCLIP(clip_model, classnames, n_ctx_text=node.N_CTX_TEXT, n_ctx_vision=node.N_CTX_VISION,
                             ctx_init=node.CTX_INIT, depth_text=node.PROMPT_DEPTH_TEXT,
                             depth_vision=node.PROMPT_DEPTH_VISION, text_loss_weight=node.TEXT_LOSS_WEIGHT,
                             image_loss_weight=node.IMAGE_LOSS_WEIGHT, upstream_numerics=self.upstream_numerics)

    def build_model(self):
        super().build_model()
        node = self.cfg.TRAINER.PROMPTSRC
        self.gpa_weights = gaussian_weights(self.cfg.OPTIM.MAX_EPOCH, node.GPA_MEAN, node.GPA_STD)
        self.gpa_sum = None  # {name: fp32 tensor}: sum over the finished epochs of w_e * P_e
        self._saving = False
        logger.info(f"Gaussian prompt aggregation over {len(self.gpa_weights)} epochs (mean {node.GPA_MEAN}, "
                    f"std {node.GPA_STD}): weights {', '.join(f'{w:.4f}' for w in self.gpa_weights)}")

    # -- Gaussian prompt aggregation
    def aggregate_prompts(self):
        """Add ``w_e * P_e`` for the epoch just finished; after the last one, load the sum into the prompts."""
        weight = self.gpa_weights[self.epoch]
        current = {n: p.detach().float() for n, p in self.trainable_parameters()}
        if self.gpa_sum is None:
            self.gpa_sum = {n: weight * p for n, p in current.items()}
        else:
            self.gpa_sum = {n: self.gpa_sum[n] + weight * p for n, p in current.items()}
        if self.epoch + 1 == self.max_epoch:
            logger.info("Using the Gaussian-aggregated prompts (GPA) for the final model")
            with torch.no_grad():
                for name, param in self.trainable_parameters():
                    param.copy_(self.gpa_sum[name].to(param.dtype))

    def after_epoch(self):
        self.aggregate_prompts()
        super().after_epoch()

    # -- checkpoints: the running GPA sum travels with the intermediate checkpoints (for --resume)
    def save_model(self, *args, **kwargs):
        self._saving = True  # the running sum is written, never expected when loading
        try:
            super().save_model(*args, **kwargs)
        finally:
            self._saving = False

    def state_dict_for_checkpoint(self, name):
        state = super().state_dict_for_checkpoint(name)
        finished = self.epoch + 1 >= self.max_epoch
        if self._saving and self.gpa_sum is not None and not finished:
            state.update({GPA_KEY_PREFIX + k: v.detach().clone() for k, v in self.gpa_sum.items()})
        return state

    def load_state_dict_from_checkpoint(self, name, state_dict, source="checkpoint"):
        state_dict = dict(state_dict)
        gpa = {k[len(GPA_KEY_PREFIX):]: state_dict.pop(k) for k in list(state_dict) if k.startswith(GPA_KEY_PREFIX)}
        super().load_state_dict_from_checkpoint(name, state_dict, source=source)
        if gpa:
            device = next(iter(self.model.parameters())).device
            self.gpa_sum = {k: v.to(device=device, dtype=torch.float32) for k, v in gpa.items()}

    def resume_model_if_exist(self, directory):
        start_epoch = super().resume_model_if_exist(directory)
        if 0 < start_epoch < self.max_epoch and self.gpa_sum is None:
            logger.warning(f"The checkpoint resumed at epoch {start_epoch} holds no Gaussian prompt aggregate: "
                           f"GPA sums epochs {start_epoch + 1}..{self.max_epoch} only")
        return start_epoch
