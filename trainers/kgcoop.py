"""KgCoOp: knowledge-guided context optimisation (Yao et al., CVPR 2023), node ``TRAINER.KGCOOP``.

CoOp's learned context ``v`` (same prompts, same logits), trained with a knowledge-guided term that
keeps each learned class embedding close to the frozen CLIP embedding of the hand-crafted prompt:

    L = CE(exp(s) cos(f(x), g(t_c)), y) + W * L_kg,
    L_kg = 1 - (1/C) sum_c cos(w_c, w_c^clip) = (1/(2C)) sum_c ||w^_c - w^_c^clip||^2

with ``w_c = g(t_c)`` the prompted text feature of class ``c``, ``w_c^clip`` CLIP's feature of the
template sentence (``template_for(cfg, KGCOOP_TEMPLATES)``, computed once per class set), ``^`` the
L2 normalisation. The paper writes L_kg as the mean squared distance of the embeddings; the
official code computes ``1 - mean cosine`` of the normalised embeddings, i.e. half of it, which is
what ``W`` (8.0 in the official scripts) was tuned with; we implement the code's normalisation.

Config node ``TRAINER.KGCOOP``: ``N_CTX``, ``CSC``, ``CTX_INIT``, ``CLASS_TOKEN_POSITION`` (as
CoOp), ``W`` (the weight of L_kg), ``PREC``, ``UPSTREAM_NUMERICS`` (L_kg and the targets in the
backbone dtype instead of fp32). Registered model ``prompt_learner`` (the prompt learner, key
``ctx``, as upstream); the official checkpoints' unused ``bias_vectors`` and ``meta_net.*`` tensors
(never trained upstream: only names containing ``ctx`` get gradients) are dropped when loading.
"""
import torch.nn.functional as F

from engine.utils.logger import get_logger
from trainers.base import register_method
from trainers.coop import CoOp, CoOpCLIP
from trainers.prompts import template_text_features
from trainers.templates import COMMA_TEMPLATES, template_for

logger = get_logger()

METHOD = {
    "key": "kgcoop",
    "trainer": "KgCoOp",
    "node": "KGCOOP",
    "config": {
        "N_CTX": 4,  # number of context vectors (official scripts: NCTX=4)
        "CSC": False,  # class-specific context
        "CTX_INIT": "",  # initialisation words; the official config uses "a photo of a"
        "W": 8.0,  # weight of L_kg (official scripts: WEIGHT=8.0)
        "PREC": "fp16",  # fp16, fp32, bf16, amp
        "UPSTREAM_NUMERICS": False,  # True: the official fp16 arithmetic
        "CLASS_TOKEN_POSITION": "end",  # 'middle', 'end' or 'front'
    },
    "checkpoint": "prompt_learner",
    "b2n_cfg": "vit_b16_ep100_ctxv1",
    "xd_cfg": "vit_b16_ep100_ctxv1",
    "order": 25,
}

#: hand-crafted templates of the L_kg targets (the official kgcoop.py table equals COMMA's)
KGCOOP_TEMPLATES = COMMA_TEMPLATES
#: cosine-similarity eps of the official loss
KG_EPS = 1e-7
#: official checkpoint tensors that are created but never used or trained upstream
UNUSED_LEGACY_KEYS = ("bias_vectors", "meta_net.")


class KgCoOpCLIP(CoOpCLIP):
    """CoOp's model plus the fixed CLIP text features of the template sentences and L_kg."""

    def __init__(self, clip_model, classnames, template, weight=8.0, upstream_numerics=False, **coop):
        super().__init__(clip_model, classnames, **coop)
        self.template = template
        self.kg_weight = float(weight)
        targets = template_text_features(clip_model, self.text_encoder, classnames, [template], upstream_numerics)
        self.register_buffer("clip_text_features", targets, persistent=False)  # normalised [C, E]

    def knowledge_loss(self, text_features):
        """L_kg = 1 - mean_c cos(w_c, w_c^clip) for un-normalised prompted features ``[C, E]``."""
        target = self.clip_text_features
        if self.upstream_numerics:
            w, w0 = F.normalize(text_features, dim=-1), target.to(text_features.dtype)
        else:
            w, w0 = F.normalize(text_features.float(), dim=-1), target.float()
        return 1.0 - F.cosine_similarity(w, w0, dim=-1, eps=KG_EPS).mean()

    def compute_loss(self, image, label):
        """``L = CE + W * L_kg``; logged as ``loss`` (total), ``loss_kg`` and ``acc``."""
        image_features, text_features = self.forward_features(image)
        logits = self.logits_from(image_features, text_features)
        loss_kg = self.knowledge_loss(text_features)
        loss = F.cross_entropy(logits, label) + self.kg_weight * loss_kg
        return loss, self.loss_summary(loss, logits, label, loss_kg=loss_kg.item())

    def load_legacy_state_dict(self, state_dict):
        unused = [k for k in state_dict if any(k.split("module.", 1)[-1].startswith(p) for p in UNUSED_LEGACY_KEYS)]
        if unused:
            logger.info(f"Ignoring {len(unused)} tensors of the official checkpoint that KgCoOp never uses "
                        f"({', '.join(unused[:3])}{', ...' if len(unused) > 3 else ''})")
        return {k: v for k, v in state_dict.items() if k not in unused}


@register_method(METHOD)
class KgCoOp(CoOp):
    """KgCoOp trainer (``TRAINER.KGCOOP``): CoOp with ``L = CE + W * L_kg``."""

    def build_custom_model(self, clip_model, classnames):
        node = self.cfg.TRAINER[self.CFG_NODE]
        template = template_for(self.cfg, KGCOOP_TEMPLATES)
        logger.info(f'KgCoOp: L_kg targets from the template "{template}", W = {node.W}')
        return KgCoOpCLIP(clip_model, classnames, template, weight=node.W, upstream_numerics=self.upstream_numerics,
                          n_ctx=node.N_CTX, ctx_init=node.CTX_INIT, csc=node.CSC,
                          position=node.CLASS_TOKEN_POSITION)
