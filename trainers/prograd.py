"""ProGrad: prompt-aligned gradient (Zhu et al., ICCV 2023), node ``TRAINER.PROGRAD``.

CoOp's learned context ``v`` (same prompts, same logits ``s = exp(t) cos(f(x), g(t_c))``), trained
with the cross-entropy gradient ``G_d = grad_v CE(s, y)`` made to agree with the "general
direction" ``G_g = grad_v L_kl``, the gradient of a distillation term towards zero-shot CLIP:

    L_kl = T^2 * mean_i sum_c -softmax(z_i / T)_c * log softmax(s_i / T)_c
    G    = G_d                                         if cos(G_d, G_g) >= 0
    G    = G_d - lambda * (G_d . G_g / |G_g|) G_g / |G_g|   otherwise (paper eq. 4, per tensor)

with ``z = exp(t) cos(f(x), w^zs)`` the zero-shot logits of the hand-crafted template sentences
(``PROGRAD_TEMPLATES``, the official table; ``DATASET.TEMPLATE`` overrides it), always in fp32.
Only ``G`` reaches the optimiser; ``L_kl`` steers, it is not added. ``L_kl`` is the official code's
cross-entropy to the soft targets (KL plus the targets' entropy: the same gradient).

The update is the engine's several-loss step (``engine.training.update_step``): ``compute_loss``
returns ``{"kl": L_kl, "xe": CE}`` (backward in that order, as the official fork), each loss's
gradient is averaged over ``torchrun`` ranks and unscaled (GradScaler) before
:meth:`ProGrad.combine_gradients` projects it, so a distributed or amp run projects the
one-process, unscaled gradients.

Configuration as in the official repository (its YAMLs and scripts load unchanged): the prompt is
CoOp's and read from CoOp's node ``TRAINER.COOP`` (``N_CTX``, ``CSC``, ``CLASS_TOKEN_POSITION``,
``CTX_INIT``); the loss from the top-level ``LOSS`` node (``extra_config``): ``LAMBDA`` (lambda),
``T`` (temperature), ``NAME`` ("prograd" or ""), ``GM`` and ``ALPHA`` (declared by the official
code, unused by ProGrad). ``TRAINER.COOP.CTX_INIT``: empty or ``False`` -> N(0, 0.02) context; ``True``
(what the official configs set) -> the words of the dataset's template (``"a photo of a"``...);
other words -> those words. Init words fill the last of the ``N_CTX`` positions, the others start
at zero and read ``X`` in the sentence, as upstream. ``TRAINER.PROGRAD``: ``PREC`` (the official
``TRAINER.COOP.PREC``; the official scripts keep its default fp16) and ``UPSTREAM_NUMERICS``
(student logits and CE in the backbone dtype, as the official fp16 code). The zero-shot teacher's
encoders run in the backbone dtype (upstream: a second, fp32 CLIP). Registered model
``prompt_learner`` (key ``ctx``), as upstream, so official checkpoints load.
"""
import torch
import torch.nn.functional as F

from engine.precision import check_prec
from engine.utils.logger import get_logger
from trainers.base import register_method
from trainers.coop import POSITIONS, CoOp, CoOpCLIP
from trainers.prompts import embed_texts, template_text_features, text_width
from trainers.templates import template_for

logger = get_logger()

METHOD = {
    "key": "prograd",
    "trainer": "ProGrad",
    "node": "PROGRAD",
    "config": {
        "PREC": "fp16",  # fp16, fp32, bf16, amp (official: TRAINER.COOP.PREC, default fp16)
        "UPSTREAM_NUMERICS": False,  # True: the official fp16 arithmetic of the student logits
    },
    # the official extend_cfg's LOSS node (its YAMLs set NAME and T, its scripts LAMBDA)
    "extra_config": {"LOSS": {"NAME": "", "T": 1.0, "LAMBDA": 1.0, "GM": False, "ALPHA": 0.0}},
    "checkpoint": "prompt_learner",
    # official base2new_{train,test}_prograd.sh: rn50_ep100, ImageNet rn50_ep50 (its README)
    "b2n_cfg": "rn50_ep100",
    "b2n_cfg_per_dataset": {"imagenet": "rn50_ep50"},
    # official few-shot protocol (README): 50 epochs for 1 shot, 100 for 2 and 4, 200 for 8 and 16
    "fewshot_cfg": "rn50",
    "fewshot_cfg_per_shots": {1: "rn50_ep50", 2: "rn50_ep100", 4: "rn50_ep100"},
    "fewshot_cfg_per_dataset": {"imagenet": "rn50_ep50"},
    "xd_cfg": "rn50_ep50",
    "order": 22,
}

#: the official zero-shot templates (teacher prompts, and the init words of ``CTX_INIT True``)
PROGRAD_TEMPLATES = {
    "OxfordPets": "a type of pet, a photo of a {}.",
    "OxfordFlowers": "a type of flower, a photo of a {}.",
    "FGVCAircraft": "a type of aircraft, a photo of a {}.",
    "DescribableTextures": "a texture of {}.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a type of food, a photo of {}.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}
LOSS_NAMES = ("", "prograd")


def init_words(ctx_init, template):
    """The context's initial words for ``TRAINER.COOP.CTX_INIT`` (a string in our config), or "".

    "" / "False": random; "True" (the official configs' ``CTX_INIT: True``): the template without
    its class slot (``"a photo of a {}."`` -> ``"a photo of a"``); anything else: those words.
    """
    text = str(ctx_init).strip()
    if text in ("", "False"):
        return ""
    if text == "True":
        text = template.replace(" {}.", "")
        if "{}" in text:
            raise ValueError(f"TRAINER.COOP.CTX_INIT True takes its words from a template ending in ' {{}}.', "
                             f"got {template!r}")
    return text.replace("_", " ")


def aligned_context(clip_model, n_ctx, words):
    """ProGrad's initial context ``(ctx [n_ctx, D] fp32, sentence prefix)`` from ``words``.

    With ``w`` the number of space-separated words: the last ``w`` rows are the embeddings of the
    first ``w`` tokens of ``words``, the others zero; the prefix is ``n_ctx - w`` words ``X`` then
    ``words`` (the official arithmetic, also where punctuation makes more tokens than words).
    """
    w = len(words.split(" "))
    if n_ctx < w:
        raise ValueError(f"TRAINER.COOP.N_CTX={n_ctx} is smaller than the {w} words of the initial prompt {words!r}")
    _, embedding = embed_texts(clip_model, [words])
    ctx = torch.zeros(n_ctx, text_width(clip_model))
    ctx[n_ctx - w:] = embedding[0, 1:1 + w].float()
    return ctx, " ".join(["X"] * (n_ctx - w) + [words])


def prograd_losses(logits, teacher_logits, label, temperature):
    """``(CE(logits, y), L_kl)`` with ``L_kl = T^2 mean_i sum_c -softmax(z_i/T)_c log softmax(s_i/T)_c``."""
    xe = F.cross_entropy(logits, label)
    target = F.softmax(teacher_logits / temperature, dim=-1)
    kl = (-target * F.log_softmax(logits / temperature, dim=-1) * temperature * temperature).sum(1).mean()
    return xe, kl


def project_conflicting(g_xe, g_kl, lam):
    """ProGrad's gradient of one tensor: ``g_xe`` minus ``lam`` times its component along ``g_kl``
    when the two point apart (negative cosine), else ``g_xe`` (None stays None)."""
    if g_xe is None or g_kl is None:
        return g_xe
    kl_unit = g_kl / torch.linalg.norm(g_kl)
    xe_unit = g_xe / torch.linalg.norm(g_xe)
    if torch.dot(xe_unit.flatten(), kl_unit.flatten()) < 0:
        return g_xe - lam * torch.dot(g_xe.flatten(), kl_unit.flatten()) * kl_unit
    return g_xe


class ProGradCLIP(CoOpCLIP):
    """CoOp's model plus the fixed zero-shot text features of the template sentences."""

    def __init__(self, clip_model, classnames, template, temperature=1.0, **coop):
        super().__init__(clip_model, classnames, **coop)
        self.template = template
        self.temperature = float(temperature)
        zero_shot = template_text_features(clip_model, self.text_encoder, classnames, [template])
        self.register_buffer("zs_text_features", zero_shot, persistent=False)  # normalised fp32 [C, E]

    @torch.no_grad()
    def zero_shot_logits(self, image_features):
        """``z = exp(t) cos(f(x), w^zs)`` in fp32 (the teacher; no gradient)."""
        image = F.normalize(image_features.detach().float(), dim=-1)
        return self.logit_scale.float().exp() * image @ self.zs_text_features.float().t()

    def compute_loss(self, image, label):
        """``({"kl": L_kl, "xe": CE}, summary)``: two losses, combined by the trainer's projection;
        logged as ``xe_loss``, ``kl_loss`` and ``acc`` (the official log line)."""
        image_features, text_features = self.forward_features(image)
        logits = self.logits_from(image_features, text_features)
        xe, kl = prograd_losses(logits, self.zero_shot_logits(image_features), label, self.temperature)
        summary = {"xe_loss": xe.item(), "kl_loss": kl.item(),
                   "acc": (logits.argmax(dim=1) == label).float().mean().item() * 100.0}
        return {"kl": kl, "xe": xe}, summary


@register_method(METHOD)
class ProGrad(CoOp):
    """ProGrad trainer: CoOp's prompt (``TRAINER.COOP``), the CE gradient projected against the
    zero-shot distillation gradient (``LOSS.LAMBDA``, ``LOSS.T``), precision ``TRAINER.PROGRAD.PREC``."""

    PROMPT_NODE = "COOP"

    def check_cfg(self, cfg):
        check_prec(cfg.TRAINER[self.CFG_NODE].PREC, f"TRAINER.{self.CFG_NODE}.PREC")
        position = cfg.TRAINER[self.PROMPT_NODE].CLASS_TOKEN_POSITION
        if position not in POSITIONS:
            raise ValueError(f"TRAINER.{self.PROMPT_NODE}.CLASS_TOKEN_POSITION must be one of {POSITIONS}, "
                             f"got {position!r}")
        if cfg.LOSS.NAME not in LOSS_NAMES:
            raise ValueError(f"LOSS.NAME must be 'prograd' (or empty) for ProGrad, got {cfg.LOSS.NAME!r}")
        if not cfg.LOSS.T > 0:
            raise ValueError(f"LOSS.T (the distillation temperature) must be > 0, got {cfg.LOSS.T}")

    def build_custom_model(self, clip_model, classnames):
        cfg = self.cfg
        node = cfg.TRAINER[self.PROMPT_NODE]
        template = template_for(cfg, PROGRAD_TEMPLATES)
        words = init_words(node.CTX_INIT, template)
        context = aligned_context(clip_model, int(node.N_CTX), words) if words else None
        if node.PREC != self.prec:
            logger.info(f"TRAINER.{self.PROMPT_NODE}.PREC {node.PREC} is CoOp's; ProGrad runs with "
                        f"TRAINER.{self.CFG_NODE}.PREC {self.prec}")
        logger.info(f'ProGrad: zero-shot prompts "{template}", LOSS.LAMBDA {cfg.LOSS.LAMBDA}, LOSS.T {cfg.LOSS.T}; '
                    f"prompt from TRAINER.{self.PROMPT_NODE}, precision TRAINER.{self.CFG_NODE}.PREC {self.prec}")
        return ProGradCLIP(clip_model, classnames, template, temperature=cfg.LOSS.T, n_ctx=node.N_CTX,
                           csc=node.CSC, position=node.CLASS_TOKEN_POSITION, context=context)

    def combine_gradients(self, grads, params):
        """Per tensor: :func:`project_conflicting` of the CE gradient against the L_kl gradient."""
        lam = float(self.cfg.LOSS.LAMBDA)
        return [project_conflicting(g_xe, g_kl, lam) for g_xe, g_kl in zip(grads["xe"], grads["kl"])]
