"""Trainer config nodes (``extend_cfg``), with the defaults of the official CoOp/MaPLe/COMMA ``train.py``.

Merged after Dassl's defaults and before any YAML file, so the official method YAMLs merge unchanged
(yacs rejects keys that do not exist yet). One node per method; ``PREC`` is per method as upstream.
``UPSTREAM_NUMERICS`` (every node, default False): True reproduces the official code's arithmetic
under ``PREC fp16`` (fp16 learned tensors where upstream has them, logits/normalisation/loss in the
backbone dtype, VPT's fp32 backbone); docs/METHODS.md lists every case.
"""
from yacs.config import CfgNode as CN


def extend_cfg(cfg):
    """Add every trainer node (TRAINER.COOP, COCOOP, MAPLE, COMMA, IVLP, VPT, ZSCLIP) to ``cfg`` in place."""
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16  # number of context vectors
    cfg.TRAINER.COOP.CSC = False  # class-specific context
    cfg.TRAINER.COOP.CTX_INIT = ""  # initialisation words
    cfg.TRAINER.COOP.PREC = "fp16"  # fp16, fp32, bf16, amp
    cfg.TRAINER.COOP.UPSTREAM_NUMERICS = False  # True: the official fp16 arithmetic
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"  # 'middle', 'end' or 'front'

    cfg.TRAINER.COCOOP = CN()
    cfg.TRAINER.COCOOP.N_CTX = 16
    cfg.TRAINER.COCOOP.CTX_INIT = ""
    cfg.TRAINER.COCOOP.PREC = "fp16"
    cfg.TRAINER.COCOOP.UPSTREAM_NUMERICS = False  # True: the official fp16 arithmetic

    cfg.TRAINER.MAPLE = CN()
    cfg.TRAINER.MAPLE.N_CTX = 2
    cfg.TRAINER.MAPLE.CTX_INIT = "a photo of a"
    cfg.TRAINER.MAPLE.PREC = "fp16"
    cfg.TRAINER.MAPLE.UPSTREAM_NUMERICS = False  # True: the official fp16 arithmetic
    cfg.TRAINER.MAPLE.PROMPT_DEPTH = 9  # max 12, min 1 (1 = shallow MaPLe)

    cfg.TRAINER.COMMA = CN()
    cfg.TRAINER.COMMA.N_CTX = 2
    cfg.TRAINER.COMMA.CTX_INIT = "a photo of a"
    cfg.TRAINER.COMMA.PREC = "fp16"
    cfg.TRAINER.COMMA.UPSTREAM_NUMERICS = False  # True: the official fp16 arithmetic
    cfg.TRAINER.COMMA.PROMPT_DEPTH = 9
    cfg.TRAINER.COMMA.WEIGHT = 1.0  # lambda of L = L_ce + lambda * L_kd
    cfg.TRAINER.COMMA.LAST_LAYER = 1  # K: L_kd over the real last K text blocks
    # False: official code (generated vision prompts carry no gradient; generator keeps its seeded
    # init) -- the published numbers. True: the paper's intent (generator trained end to end).
    cfg.TRAINER.COMMA.TRAIN_GENERATOR = False
    # L_kd positions: "all" = every context position (official; the training text pass then runs all
    # 77), "real" = each class's positions up to its EOT (the pass is truncated like the others).
    cfg.TRAINER.COMMA.KD_TOKENS = "all"

    cfg.TRAINER.IVLP = CN()
    cfg.TRAINER.IVLP.N_CTX_VISION = 2
    cfg.TRAINER.IVLP.N_CTX_TEXT = 2
    cfg.TRAINER.IVLP.CTX_INIT = "a photo of a"
    cfg.TRAINER.IVLP.PREC = "fp16"
    cfg.TRAINER.IVLP.UPSTREAM_NUMERICS = False  # True: the official fp16 arithmetic
    cfg.TRAINER.IVLP.PROMPT_DEPTH_VISION = 9  # 0 = no vision prompts
    cfg.TRAINER.IVLP.PROMPT_DEPTH_TEXT = 9  # 0 = no text prompts

    cfg.TRAINER.VPT = CN()
    cfg.TRAINER.VPT.N_CTX_VISION = 2
    cfg.TRAINER.VPT.CTX_INIT = "a photo of a"
    cfg.TRAINER.VPT.PREC = "fp16"
    cfg.TRAINER.VPT.UPSTREAM_NUMERICS = False  # True: the official fp16 arithmetic
    cfg.TRAINER.VPT.PROMPT_DEPTH_VISION = 1  # 1 = shallow VPT

    cfg.TRAINER.ZSCLIP = CN()
    cfg.TRAINER.ZSCLIP.PREC = "fp16"
    cfg.TRAINER.ZSCLIP.UPSTREAM_NUMERICS = False  # True: the official fp16 arithmetic

    cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # all, base or new
    return cfg
