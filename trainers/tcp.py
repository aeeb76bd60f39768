"""TCP: textual-based class-aware prompt tuning (Yao et al., CVPR 2024), config node ``TRAINER.TCP``.

CoOp's learned context ``v`` ([M, Dt]) plus class-aware tokens from the Textual Knowledge Embedding
(TKE), a small network on CLIP's own text feature of each class:

    w_c^clip = ^g(T(c))                         (frozen CLIP, hand-crafted template T, ^ = L2 norm)
    P_c = reshape(W_2 QuickGELU(W_1 w_c^clip + b_1) + b_2, [M, Dt])      (TKE, E -> E/4 -> M*Dt)
    w_c = g([SOS][v_1 .. v_M][sentence of c] ; P_c before text block K)

i.e. the sentence ``[SOS][v][class words][EOS]`` runs through CLIP's text blocks and, before block
``K`` (``CLASS_PROMPT_DEPTH``, 1-based; the official code inserts before block 9 of 12), the hidden
states of positions ``1..M`` are replaced by ``P_c`` (``engine.backbone.deep_prompts_at``). Logits
``exp(s) cos(f(x), w_c)``; loss as KgCoOp's, with the official weight 8:

    L = CE(logits, y) + W * (1 - (1/C) sum_c cos(^w_c, w_c^clip))

Official details kept: the sentence tables (``TCP_SENTENCES``: the words after the M context
positions, e.g. ``"{}, a type of pet."``) and the target templates (``TCP_TARGET_TEMPLATES``) per
dataset; TKE layer names ``meta_net.linear1/relu/linear2`` (the official "relu" is a QuickGELU);
``v`` and TKE in CLIP's dtype (fp16 with an fp16 backbone, as upstream); Adam with ``eps`` =
``ADAM_EPS`` (1e-3: the official README's edit of Dassl's Adam, needed for fp16 training) when
``OPTIM.NAME`` is ``adam``. The official blend ``1.0 * P_c + 0.0 * h`` at block K is the replacement
itself (same numbers, same gradients).

Config node ``TRAINER.TCP``: ``N_CTX`` (M, 4: the official templates' four "X"), ``CTX_INIT`` ("" =
N(0, 0.02); the official YAML's ``CTX_INIT: False``), ``W`` (8.0, hard-coded upstream),
``CLASS_PROMPT_DEPTH`` (K, 9), ``ADAM_EPS``, ``PREC``, ``UPSTREAM_NUMERICS`` (targets, normalisation,
logits and the loss in the backbone dtype). ``extra_config`` declares ``TRAINER.COOP.W`` (the official
scripts pass ``TRAINER.COOP.W 1.0``, which the official code never reads), so the official YAMLs and
command lines load; TCP reads only ``TRAINER.TCP``. Registered model ``prompt_learner`` (the prompt
learner: keys ``ctx``, ``meta_net.*``, as the official checkpoints).
"""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.backbone import deep_prompts_at
from engine.utils.logger import get_logger
from trainers.base import PromptCLIP, PromptTrainer, register_method
from trainers.prompts import ClassSentences, check_prompt_depth, embed_texts, init_context, template_text_features
from trainers.templates import COMMA_TEMPLATES, format_classname, template_for

logger = get_logger()

METHOD = {
    "key": "tcp",
    "trainer": "TCP",
    "node": "TCP",
    "config": {
        "N_CTX": 4,  # context tokens = class-aware tokens (official scripts: NCTX=4)
        "CTX_INIT": "",  # "" = random (official YAML: CTX_INIT False); else initialisation words
        "W": 8.0,  # weight of the consistency term (hard-coded 8.0 in the official loss)
        "CLASS_PROMPT_DEPTH": 9,  # class-aware tokens replace positions 1..M before this text block (1-based)
        "ADAM_EPS": 1e-3,  # Adam eps of the official (edited) Dassl optimiser
        "PREC": "fp16",  # fp16, fp32, bf16, amp
        "UPSTREAM_NUMERICS": False,  # True: the official fp16 arithmetic
    },
    "extra_config": {"TRAINER.COOP": {"W": 1.0}},  # set by the official scripts, never read upstream
    "checkpoint": "prompt_learner",
    "b2n_cfg": "vit_b16_ep100_ctxv1",
    # the official train.py forces 25 epochs for ImageNet and SUN397 (and its scripts load epoch 25)
    "b2n_cfg_per_dataset": {"imagenet": "vit_b16_ep25_ctxv1", "sun397": "vit_b16_ep25_ctxv1"},
    "xd_cfg": "vit_b16_ep25_ctxv1",  # cross-dataset training is on ImageNet
    "order": 28,
}

#: targets w_c^clip: the official ``CUSTOM_TEMPLATES_ori`` (COMMA's table but for two datasets)
TCP_TARGET_TEMPLATES = dict(COMMA_TEMPLATES, FGVCAircraft="a photo of an aircraft {}.",
                            Food101="a photo of a {}, a type of food.")
#: the words after the M context positions (official ``CUSTOM_TEMPLATES`` without the leading
#: "X X X X" / "a photo of a", whose four tokens the context replaces); others: "{}."
TCP_SENTENCES = {
    "OxfordPets": "{}, a type of pet.",
    "OxfordFlowers": "{}, a type of flower.",
    "FGVCAircraft": "{}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "StanfordCars": "{}, a type of car",
    "Food101": "{}, a type of food.",
    "UCF101": "person doing {}.",
}
DEFAULT_SENTENCE = "{}."
#: cosine-similarity eps of the official consistency term
COS_EPS = 1e-7
#: TKE hidden width = E // TKE_REDUCTION
TKE_REDUCTION = 4


class QuickGELU(nn.Module):
    """CLIP's ``x * sigmoid(1.702 x)``."""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


def build_tke(embed_dim, n_ctx, width, dtype):
    """TKE: ``Linear(E, E // 4) -> QuickGELU -> Linear(E // 4, M * Dt)`` (official names)."""
    hidden = max(1, embed_dim // TKE_REDUCTION)
    net = nn.Sequential(OrderedDict([
        ("linear1", nn.Linear(embed_dim, hidden, bias=True)),
        ("relu", QuickGELU()),
        ("linear2", nn.Linear(hidden, n_ctx * width, bias=True)),
    ]))
    return net.to(dtype)


class TCPPromptLearner(ClassSentences):
    """Context ``ctx`` [M, Dt], TKE ``meta_net`` and the fixed class sentences and targets.

    ``forward()`` -> ``(sentence embeddings [C, 77, Dt], class-aware tokens [C, M, Dt])``;
    ``class_text_features`` [C, E] holds the normalised targets w^clip (not saved: class-dependent).
    """

    def __init__(self, clip_model, classnames, targets, sentence, n_ctx=4, ctx_init="", depth=9):
        super().__init__()
        layers = clip_model.transformer.layers
        depth, n_ctx = check_prompt_depth("TRAINER.TCP.CLASS_PROMPT_DEPTH", depth, n_ctx, layers, minimum=2,
                                          ctx_key="TRAINER.TCP.N_CTX", what="text")
        dtype = torch.float16 if clip_model.dtype == torch.float16 else torch.float32  # as upstream
        ctx, _ = init_context(clip_model, n_ctx, ctx_init, key="TRAINER.TCP.N_CTX")
        logger.info(f'Initial context: {repr(ctx_init) if ctx_init else "random"}; {n_ctx} context tokens, '
                    f"class-aware tokens before text block {depth}")
        self.ctx = nn.Parameter(ctx.to(dtype))  # created first: the official RNG order (ctx, then TKE)
        width = clip_model.ln_final.weight.shape[0]
        self.meta_net = build_tke(targets.shape[1], n_ctx, width, dtype)
        placeholder = " ".join(["X"] * n_ctx)
        texts = [f"{placeholder} {sentence.format(format_classname(name))}" for name in classnames]
        tokenized, embedding = embed_texts(clip_model, texts)
        self.register_buffer("token_prefix", embedding[:, :1, :].clone())
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :].clone())
        self.register_buffer("tokenized_prompts", tokenized.clone(), persistent=False)
        self.register_buffer("class_text_features", targets.clone(), persistent=False)
        self.n_cls, self.n_ctx, self.depth, self.width = len(classnames), n_ctx, depth, width

    def class_prompts(self):
        """TKE(w^clip) as ``[C, M, Dt]`` class-aware tokens."""
        out = self.meta_net(self.class_text_features.to(self.ctx.dtype))
        return out.reshape(self.n_cls, self.n_ctx, self.width)

    def forward(self):
        return self.assemble(self.ctx), self.class_prompts()


class TCPCLIP(PromptCLIP):
    """CLIP whose class features come from TCP's prompts; images are not prompted."""

    LOG_ACCURACY = True  # the official log line reports the batch accuracy

    def __init__(self, clip_model, classnames, target_template, sentence=DEFAULT_SENTENCE, weight=8.0,
                 upstream_numerics=False, **learner):
        super().__init__(clip_model, classnames)
        self.upstream_numerics = upstream_numerics
        self.weight = float(weight)
        targets = template_text_features(clip_model, self.text_encoder, classnames, [target_template],
                                         upstream_numerics)
        self.prompt_learner = TCPPromptLearner(clip_model, classnames, targets, sentence, **learner)

    def text_features(self):
        learner = self.prompt_learner
        prompts, class_prompts = learner()
        deep = deep_prompts_at({learner.depth: class_prompts}, self.text_encoder.layers)
        return self.text_encoder(prompts, learner.tokenized_prompts, deep)

    def image_features(self, image):
        return self.image_encoder(image)

    def consistency_loss(self, text_features):
        """``1 - mean_c cos(^w_c, w_c^clip)`` (official eps 1e-7) for un-normalised ``[C, E]`` features."""
        target = self.prompt_learner.class_text_features
        if self.upstream_numerics:
            w, w0 = F.normalize(text_features, dim=-1), target.to(text_features.dtype)
        else:
            w, w0 = F.normalize(text_features.float(), dim=-1), target.float()
        return 1.0 - F.cosine_similarity(w, w0, dim=-1, eps=COS_EPS).mean()

    def compute_loss(self, image, label):
        """``L = CE + W * L_kg``; logged as ``loss`` (total), ``loss_kg`` and ``acc``."""
        image_features, text_features = self.forward_features(image)
        logits = self.logits_from(image_features, text_features)
        loss_kg = self.consistency_loss(text_features)
        loss = F.cross_entropy(logits, label) + self.weight * loss_kg
        return loss, self.loss_summary(loss, logits, label, loss_kg=loss_kg.item())


@register_method(METHOD)
class TCP(PromptTrainer):
    """TCP trainer (``TRAINER.TCP``): ``L = CE + W * L_kg``, Adam eps ``ADAM_EPS``."""

    REGISTER_PROMPT_LEARNER_ONLY = True

    def build_custom_model(self, clip_model, classnames):
        node = self.cfg.TRAINER[self.CFG_NODE]
        target = template_for(self.cfg, TCP_TARGET_TEMPLATES)
        sentence = TCP_SENTENCES.get(self.cfg.DATASET.NAME, DEFAULT_SENTENCE)
        logger.info(f'TCP: targets from "{target}", sentences "[SOS][ctx] {sentence}", W = {node.W}')
        return TCPCLIP(clip_model, classnames, target, sentence, weight=node.W,
                       upstream_numerics=self.upstream_numerics, n_ctx=node.N_CTX, ctx_init=node.CTX_INIT,
                       depth=node.CLASS_PROMPT_DEPTH)

    def build_model(self):
        super().build_model()
        eps = float(self.cfg.TRAINER[self.CFG_NODE].ADAM_EPS)
        if self.optim is not None and self.cfg.OPTIM.NAME == "adam":
            for group in self.optim.param_groups:
                group["eps"] = eps
            logger.info(f"Adam eps = {eps:g} (TRAINER.{self.CFG_NODE}.ADAM_EPS, the official setting)")
