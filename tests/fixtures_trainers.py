"""Every declared trainer on the tiny random CLIP, with class names instead of a dataset.

The trainer list is derived from the method declarations (``trainers.config.method_declarations``),
so a new ``trainers/<method>.py`` with its ``METHOD`` literal is covered without an edit here. Every
``*PROMPT_DEPTH*`` key is capped at the tiny backbone's 3 blocks; everything else is the method's
declared default. ``build_tiny_trainer`` seeds the learned tensors (``torch.manual_seed(0)``) and the
random CLIP (``SEED 1``), so two builds with the same arguments are the same model.
"""
import torch

#: class names of the tiny trainers (real ImageNet names: realistic prompt lengths)
CLASSES = ["tench", "goldfish", "great white shark"]
#: deepest prompt the 3-block tiny backbone takes
TINY_DEPTH = 3


def declared_trainers():
    """``{trainer name: (config node, opts capping its prompt depths, zero_shot)}`` of every declared method."""
    from trainers.config import method_declarations

    out = {}
    for decl in method_declarations():
        opts = []
        for key, value in decl["config"].items():
            if "PROMPT_DEPTH" in key and isinstance(value, int) and value > TINY_DEPTH:
                opts += [f"TRAINER.{decl['node']}.{key}", str(TINY_DEPTH)]
        out[decl["trainer"]] = (decl["node"], opts, bool(decl["zero_shot"]))
    return out


def build_tiny_trainer(name, prec, device="cpu", opts=(), batch=2):
    """The registered trainer ``name`` on the tiny random CLIP in ``prec`` on ``device`` (SGD lr 0.01,
    no warm-up), with :data:`CLASSES` set instead of a dataset; ``opts`` are extra config overrides."""
    import trainers  # noqa: F401  (registers the trainers)
    from engine.config import setup_cfg
    from engine.trainer import TRAINER_REGISTRY
    from trainers.config import extend_cfg

    node, depth_opts, _ = declared_trainers()[name]
    base = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
            "USE_CUDA", str(torch.device(device).type == "cuda"), "SEED", "1", "OPTIM.NAME", "sgd",
            "OPTIM.LR", "0.01", "OPTIM.WARMUP_EPOCH", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", str(batch),
            "DATALOADER.TEST.BATCH_SIZE", str(batch), f"TRAINER.{node}.PREC", prec, *depth_opts, *opts]
    cfg = setup_cfg(type("Args", (), {"trainer": name, "opts": base})(), extend=extend_cfg)
    cls = TRAINER_REGISTRY.get(name)

    def build_data_loader(self):
        self.train_loader_x = self.train_loader_u = self.val_loader = self.test_loader = self.dm = None
        self.num_classes, self.num_source_domains = len(CLASSES), 1
        self.lab2cname = dict(enumerate(CLASSES))
        self.classnames = list(CLASSES)

    torch.manual_seed(0)
    return type(name, (cls,), {"build_data_loader": build_data_loader})(cfg)


def tiny_inputs(seed=0, batch=2):
    """``(images [batch, 3, 32, 32], labels [batch])``, fixed by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, 32, 32, generator=gen)
    return images, torch.randint(0, len(CLASSES), (batch,), generator=gen)


def eval_logits(trainer, images):
    """The trainer's evaluation logits for ``images`` (eval mode, its text cache, no gradients)."""
    trainer.set_model_mode("eval")
    with torch.no_grad():
        trainer.before_evaluation()
        try:
            return trainer.model_inference(images.to(trainer.device))
        finally:
            trainer.after_evaluation()
