"""CoOp (Zhou et al., IJCV 2022): learned context vectors in front of (or around) the class name.

Class ``c``'s prompt is ``t_c = [SOS][v_1 .. v_M][CLASS_c][.][EOS]`` (``CLASS_TOKEN_POSITION``
``end``; ``middle`` puts the class tokens between the two halves of the context, ``front`` right
after SOS) and ``p(y=c|x) = softmax_c(exp(s) * cos(f(x), g(t_c)))``; loss
``L = CE(p(.|x), y)``. Only ``v`` is learned.

Config node ``TRAINER.COOP``: ``N_CTX`` (M, 16), ``CSC`` (class-specific context, False),
``CTX_INIT`` ("" = random N(0, 0.02); otherwise M = number of words and the vectors start from
their token embeddings; CSC is then ignored), ``CLASS_TOKEN_POSITION`` (end|middle|front),
``PREC``. The registered model (``prompt_learner``) is the prompt learner itself, so the checkpoint
keys are the official ``ctx`` (+ ``token_prefix``/``token_suffix`` buffers, never saved, dropped
at load). ``v`` is fp16 only when the backbone is fp16 (as upstream), fp32 otherwise.
"""
import torch
import torch.nn as nn

from engine.utils.logger import get_logger
from trainers.base import PromptCLIP, PromptTrainer, register_method
from trainers.prompts import ClassSentences, count_words, init_context, random_context, text_width
from trainers.templates import format_classname

logger = get_logger()

METHOD = {
    "key": "coop",
    "trainer": "CoOp",
    "node": "COOP",
    "config": {
        "N_CTX": 16,  # number of context vectors
        "CSC": False,  # class-specific context
        "CTX_INIT": "",  # initialisation words
        "PREC": "fp16",  # fp16, fp32, bf16, amp
        "UPSTREAM_NUMERICS": False,  # True: the official fp16 arithmetic
        "CLASS_TOKEN_POSITION": "end",  # 'middle', 'end' or 'front'
    },
    "checkpoint": "prompt_learner",
    # base-to-novel as in the CoCoOp paper's protocol: 200 epochs, except ImageNet (50);
    # cross-dataset ImageNet training with the ImageNet config, as CoCoOp's xd_train.sh
    "b2n_cfg": "vit_b16_ctxv1",
    "b2n_cfg_per_dataset": {"imagenet": "vit_b16_ep50_ctxv1"},
    # CoOp's few-shot protocol (CoOp paper): 50 epochs for 1 shot, 100 for 2 and 4, 200 for 8 and 16;
    # ImageNet 50 for every K
    "fewshot_cfg": "vit_b16",
    "fewshot_cfg_per_shots": {1: "vit_b16_ep50", 2: "vit_b16_ep100", 4: "vit_b16_ep100"},
    "fewshot_cfg_per_dataset": {"imagenet": "vit_b16_ep50"},
    "xd_cfg": "vit_b16_ep50_ctxv1",
    "order": 10,
}

POSITIONS = ("end", "middle", "front")


def context_dtype(backbone_dtype):
    """CoOp/CoCoOp context dtype: fp16 where the backbone is fp16 (official pure-fp16 SGD), else fp32."""
    return torch.float16 if backbone_dtype == torch.float16 else torch.float32


def token_layout(position, n_ctx, name_lens, seq_len):
    """Source index per output position, into the ``end`` layout ``[SOS][ctx][name . EOS pad]``.

    Returns ``LongTensor[C, seq_len]``: ``end`` is the identity; ``front`` gives
    ``[SOS][name][ctx][. EOS pad]``; ``middle`` gives ``[SOS][ctx[:M//2]][name][ctx[M//2:]][. EOS pad]``
    (``name_lens[c]`` = BPE length of class ``c``'s name).
    """
    if position not in POSITIONS:
        raise ValueError(f"TRAINER.COOP.CLASS_TOKEN_POSITION must be one of {POSITIONS}, got {position!r}")
    rows = []
    for name_len in name_lens:
        sos, ctx = [0], list(range(1, 1 + n_ctx))
        name = list(range(1 + n_ctx, 1 + n_ctx + name_len))
        rest = list(range(1 + n_ctx + name_len, seq_len))
        if position == "end":
            order = sos + ctx + name + rest
        elif position == "front":
            order = sos + name + ctx + rest
        else:
            half = n_ctx // 2
            order = sos + ctx[:half] + name + ctx[half:] + rest
        rows.append(order)
    return torch.tensor(rows, dtype=torch.long)


class CoOpPromptLearner(ClassSentences):
    """Context vectors ``ctx`` ([M, D], or [C, M, D] with CSC) and the fixed class-token embeddings.

    ``context``: ``(ctx [M, D], sentence prefix)`` from a method's own initialisation (then
    ``n_ctx``, ``ctx_init`` and ``csc`` are not used).

    ``forward()`` -> prompt token embeddings ``[C, 77, D]`` (without positional embedding), in the
    context's dtype; ``tokenized_prompts`` [C, 77] locates each EOT token.
    """

    def __init__(self, clip_model, classnames, n_ctx=16, ctx_init="", csc=False, position="end", context=None):
        super().__init__()
        n_cls = len(classnames)
        dtype = context_dtype(clip_model.dtype)
        if context is not None:  # a method's own initialisation: (ctx [M, D], sentence prefix)
            (ctx, prompt_prefix), csc = context, False
            n_ctx = ctx.shape[0]
        else:
            if ctx_init:
                n_ctx = len(ctx_init.replace("_", " ").split(" "))
                if csc:
                    logger.info("CTX_INIT is set: class-specific context (CSC) is ignored")
                    csc = False
            if csc:  # class-specific random context: one [M, D] block per class
                if n_ctx < 1:
                    raise ValueError(f"N_CTX must be >= 1 when CTX_INIT is empty, got {n_ctx}")
                ctx, prompt_prefix = random_context(n_cls, n_ctx, text_width(clip_model)), " ".join(["X"] * n_ctx)
            else:
                ctx, prompt_prefix = init_context(clip_model, n_ctx, ctx_init)
        logger.info(f'Initial context: "{prompt_prefix}"')
        logger.info(f"Number of context words (tokens): {n_ctx}")
        self.ctx = nn.Parameter(ctx.to(dtype))
        self.set_sentences(clip_model, classnames, prompt_prefix, n_ctx)
        self.csc, self.position = csc, position
        self.name_lens = [count_words(format_classname(name)) for name in classnames]
        layout = token_layout(position, n_ctx, self.name_lens, self.tokenized_prompts.shape[1])
        self.register_buffer("layout", layout, persistent=False)

    def context(self):
        """The context per class, ``[C, M, D]``."""
        ctx = self.ctx
        return ctx.unsqueeze(0).expand(self.n_cls, -1, -1) if ctx.dim() == 2 else ctx

    def assemble(self, ctx):
        """Prompt embeddings from per-class (or per-image-per-class) context ``[..., C, M, D]``,
        with the class tokens moved to ``CLASS_TOKEN_POSITION``."""
        prompts = super().assemble(ctx)
        if self.position != "end":
            lead = ctx.shape[:-3]
            index = self.layout.unsqueeze(-1).expand(*lead, -1, -1, prompts.shape[-1])
            prompts = prompts.gather(-2, index)
        return prompts

    def forward(self):
        return self.assemble(self.context())


class CoOpCLIP(PromptCLIP):
    """CLIP whose class text features come from CoOp's learned prompts; images are not prompted."""

    LOG_ACCURACY = True  # the official CoOp log line reports the batch accuracy

    def __init__(self, clip_model, classnames, n_ctx=16, ctx_init="", csc=False, position="end", context=None):
        super().__init__(clip_model, classnames)
        self.prompt_learner = CoOpPromptLearner(clip_model, classnames, n_ctx, ctx_init, csc, position, context)

    def text_features(self):
        return self.text_encoder(self.prompt_learner(), self.prompt_learner.tokenized_prompts)

    def image_features(self, image):
        return self.image_encoder(image)


@register_method(METHOD)
class CoOp(PromptTrainer):
    """CoOp trainer (``TRAINER.COOP``); registers the prompt learner as ``prompt_learner``.

    Loss: cross-entropy (``PromptCLIP.compute_loss``), logged with the batch accuracy ``acc``.
    """

    REGISTER_PROMPT_LEARNER_ONLY = True

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        position = cfg.TRAINER[self.CFG_NODE].CLASS_TOKEN_POSITION
        if position not in POSITIONS:
            raise ValueError(f"TRAINER.{self.CFG_NODE}.CLASS_TOKEN_POSITION must be one of {POSITIONS}, "
                             f"got {position!r}")

    def build_custom_model(self, clip_model, classnames):
        node = self.cfg.TRAINER[self.CFG_NODE]
        return CoOpCLIP(clip_model, classnames, n_ctx=node.N_CTX, ctx_init=node.CTX_INIT,
                        csc=node.CSC, position=node.CLASS_TOKEN_POSITION)
