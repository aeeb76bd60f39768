"""Every trainer on CUDA in fp16, bf16 and amp (tiny random CLIP, no dataset); skipped without CUDA.

Per trainer and precision: the model really lives on the GPU in the expected dtype, a few training
steps give finite losses and change exactly the trainable tensors (nothing else), evaluation logits
are finite fp32 ``[B, C]``, and before any training the reduced-precision logits are close to the
fp32 logits of the same seeded model (relative error bounded, correlation near 1).
"""
import math

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")

TRAINERS = ("CoOp", "CoCoOp", "MaPLe", "CoMMA", "IVLP", "VPT", "ZeroshotCLIP")
NODE = {"CoOp": "COOP", "CoCoOp": "COCOOP", "MaPLe": "MAPLE", "CoMMA": "COMMA", "IVLP": "IVLP", "VPT": "VPT",
        "ZeroshotCLIP": "ZSCLIP"}
DEPTH_OPTS = {"CoOp": ["TRAINER.COOP.N_CTX", "4"], "CoCoOp": ["TRAINER.COCOOP.N_CTX", "4"],
              "MaPLe": ["TRAINER.MAPLE.PROMPT_DEPTH", "3"], "CoMMA": ["TRAINER.COMMA.PROMPT_DEPTH", "3"],
              "IVLP": ["TRAINER.IVLP.PROMPT_DEPTH_TEXT", "3", "TRAINER.IVLP.PROMPT_DEPTH_VISION", "3"],
              "VPT": ["TRAINER.VPT.PROMPT_DEPTH_VISION", "3"], "ZeroshotCLIP": []}
CLASSES = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead shark"]
BATCH, STEPS = 4, 3
PARAM_DTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16, "amp": torch.float32}
#: bound on ||logits_prec - logits_fp32|| / ||logits_fp32|| on the same seeded tiny model
REL_TOL = {"fp16": 0.02, "amp": 0.02, "bf16": 0.1}


def build(name, prec, device="cuda"):
    """The registered trainer on the tiny CLIP, with the class names set instead of a dataset."""
    import trainers  # noqa: F401  (registers the trainers)
    from engine.config import setup_cfg
    from engine.trainer import TRAINER_REGISTRY
    from trainers.config import extend_cfg

    opts = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
            "USE_CUDA", str(device == "cuda"), "SEED", "1", "OPTIM.NAME", "sgd", "OPTIM.LR", "0.01",
            "DATALOADER.TRAIN_X.BATCH_SIZE", str(BATCH), "DATALOADER.TEST.BATCH_SIZE", str(BATCH),
            f"TRAINER.{NODE[name]}.PREC", prec, *DEPTH_OPTS[name]]
    cfg = setup_cfg(type("Args", (), {"trainer": name, "opts": opts})(), extend=extend_cfg)
    cls = TRAINER_REGISTRY.get(name)

    def build_data_loader(self):
        self.train_loader_x = self.train_loader_u = self.val_loader = self.test_loader = self.dm = None
        self.num_classes, self.num_source_domains = len(CLASSES), 1
        self.lab2cname = dict(enumerate(CLASSES))
        self.classnames = list(CLASSES)

    torch.manual_seed(0)
    return type(name, (cls,), {"build_data_loader": build_data_loader})(cfg)


def inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(BATCH, 3, 32, 32, generator=gen)
    return images, torch.randint(0, len(CLASSES), (BATCH,), generator=gen)


def eval_logits(trainer, images):
    trainer.set_model_mode("eval")
    with torch.no_grad():
        trainer.before_evaluation()
        try:
            return trainer.model_inference(images.to(trainer.device))
        finally:
            trainer.after_evaluation()


@pytest.mark.parametrize("prec", ["fp16", "bf16", "amp"])
@pytest.mark.parametrize("name", TRAINERS)
def test_train_and_eval_on_cuda(name, prec):
    trainer = build(name, prec)
    assert trainer.device.type == "cuda" and trainer.precision.name == prec
    clip_weights = [p for n, p in trainer.model.named_parameters() if n.endswith("attn.in_proj_weight")]
    assert clip_weights and all(p.device.type == "cuda" and p.dtype == PARAM_DTYPE[prec] for p in clip_weights)
    trainable = dict(trainer.trainable_parameters())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    if trainable:
        images, labels = inputs()
        trainer.set_model_mode("train")
        losses = [trainer.forward_backward({"img": images, "label": labels})["loss"] for _ in range(STEPS)]
        assert all(math.isfinite(loss) for loss in losses), losses
        changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])}
        # amp may skip a step on an inf/nan gradient scale; at least one of STEPS steps must update
        assert changed and changed <= set(trainable), sorted(changed - set(trainable))
        assert all(torch.isfinite(p).all() for p in trainable.values())

    logits = eval_logits(trainer, inputs(1)[0])
    assert logits.dtype == torch.float32 and tuple(logits.shape) == (BATCH, len(CLASSES))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("prec", ["fp16", "bf16", "amp"])
@pytest.mark.parametrize("name", TRAINERS)
def test_reduced_precision_logits_close_to_fp32(name, prec):
    images = inputs(2)[0]
    ref = eval_logits(build(name, "fp32"), images).cpu()
    low = eval_logits(build(name, prec), images).cpu()
    rel = ((low - ref).norm() / ref.norm()).item()
    assert rel < REL_TOL[prec], (name, prec, rel)
    corr = torch.corrcoef(torch.stack([low.flatten(), ref.flatten()]))[0, 1].item()
    assert corr > 0.99, (name, prec, corr)
