"""Baseline trainers end to end on the tiny random CLIP and a tiny Shapes dataset (32x32, 4 classes).

Proves, per trainer and for fp32 and bf16 on CPU: build logs the exact trainable-parameter count,
one optimisation step updates exactly the expected tensors (and only those receive gradients),
evaluation runs and computes the class text features once per evaluation (none for the fixed-text
methods, once per test batch for CoCoOp); CoOp saves only ``ctx``; an official-format IVLP
checkpoint (prompts inside CLIP blocks) loads through ``load_model``; zero-shot trains nothing,
registers nothing, and ZeroshotCLIP2 does not accumulate templates across instances.
"""
import logging
import os
from argparse import Namespace

import pytest
import torch

import trainers  # noqa: F401  (registers the trainers)
from demo.shapes import ensure_shapes
from engine.config import setup_cfg
from engine.trainer import build_trainer
from trainers.config import extend_cfg
from trainers.templates import IMAGENET_TEMPLATES_SELECT

N_CLASSES = 4
TEST_IMAGES = 4 * N_CLASSES
BATCH = 4

NODE_OPTS = {
    "CoOp": ["TRAINER.COOP.N_CTX", 4],
    "CoCoOp": ["TRAINER.COCOOP.N_CTX", 4],
    "IVLP": ["TRAINER.IVLP.N_CTX_TEXT", 2, "TRAINER.IVLP.N_CTX_VISION", 2,
             "TRAINER.IVLP.PROMPT_DEPTH_TEXT", 3, "TRAINER.IVLP.PROMPT_DEPTH_VISION", 3],
    "VPT": ["TRAINER.VPT.N_CTX_VISION", 2, "TRAINER.VPT.PROMPT_DEPTH_VISION", 3],
    "ZeroshotCLIP": [],
    "ZeroshotCLIP2": [],
}
NODE = {"CoOp": "COOP", "CoCoOp": "COCOOP", "IVLP": "IVLP", "VPT": "VPT", "ZeroshotCLIP": "ZSCLIP",
        "ZeroshotCLIP2": "ZSCLIP"}

# tiny widths: text 64, vision 128, embed 96 (meta-net hidden 96 // 16 = 6), 3 blocks
EXPECTED_TRAINABLE = {
    "CoOp": {"prompt_learner.ctx": 4 * 64},
    "CoCoOp": {"prompt_learner.ctx": 4 * 64, "prompt_learner.meta_net.linear1.weight": 6 * 96,
               "prompt_learner.meta_net.linear1.bias": 6, "prompt_learner.meta_net.linear2.weight": 64 * 6,
               "prompt_learner.meta_net.linear2.bias": 64},
    "IVLP": {"prompt_learner.ctx": 2 * 64, "prompt_learner.text_prompts.0": 2 * 64,
             "prompt_learner.text_prompts.1": 2 * 64, "prompt_learner.vision.vision_ctx": 2 * 128,
             "prompt_learner.vision.vision_prompts.0": 2 * 128, "prompt_learner.vision.vision_prompts.1": 2 * 128},
    "VPT": {"prompt_learner.vision_ctx": 2 * 128, "prompt_learner.vision_prompts.0": 2 * 128,
            "prompt_learner.vision_prompts.1": 2 * 128},
    "ZeroshotCLIP": {},
    "ZeroshotCLIP2": {},
}
TEXT_CALLS_PER_EVAL = {"CoOp": 1, "CoCoOp": TEST_IMAGES // BATCH, "IVLP": 1, "VPT": 0, "ZeroshotCLIP": 0,
                       "ZeroshotCLIP2": 0}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes_root")
    from demo.shapes_draw import SHAPE_NAMES
    ensure_shapes(str(root), classes=SHAPE_NAMES[:N_CLASSES], counts={"train": 4, "val": 2, "test": 4}, size=32)
    return root


@pytest.fixture
def log_lines():
    lines = []

    class _Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler = _Collect(level=logging.INFO)
    logger = logging.getLogger("harness")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def make_trainer(name, root, out, prec="fp32", extra=()):
    opts = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", True, "INPUT.SIZE", (32, 32),
            "DATALOADER.NUM_WORKERS", 0, "DATALOADER.TRAIN_X.BATCH_SIZE", BATCH,
            "DATALOADER.TEST.BATCH_SIZE", BATCH, "OPTIM.MAX_EPOCH", 1, "OPTIM.LR", 0.1, "USE_CUDA", False,
            "SEED", 1, f"TRAINER.{NODE[name]}.PREC", prec, *NODE_OPTS[name], *extra]
    args = Namespace(root=str(root), output_dir=str(out), trainer=name, dataset_config_file=None,
                     config_file=None, opts=[str(o) if not isinstance(o, str) else o for o in opts])
    cfg = setup_cfg(args, extend=extend_cfg)
    cfg.defrost()
    cfg.DATASET.NAME = "Shapes"
    cfg.freeze()
    torch.manual_seed(0)
    return build_trainer(cfg)


def text_call_counter(trainer):
    calls = []
    trainer.model.text_encoder.register_forward_hook(lambda *args: calls.append(1))
    return calls


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
@pytest.mark.parametrize("name", ["CoOp", "CoCoOp", "IVLP", "VPT"])
def test_step_updates_exactly_the_prompts_and_eval_caches_text(name, prec, data_root, tmp_path, log_lines):
    trainer = make_trainer(name, data_root, tmp_path, prec)
    expected = EXPECTED_TRAINABLE[name]
    assert f"Trainable parameters: {sum(expected.values()):,}" in log_lines
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    batch = next(iter(trainer.train_loader_x))
    trainer.set_model_mode("train")
    summary = trainer.forward_backward(batch)
    assert torch.isfinite(torch.tensor(summary["loss"]))
    with_grad = {n for n, p in trainer.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == set(expected)
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == set(expected)
    assert {n: p.numel() for n, p in trainer.model.named_parameters() if p.requires_grad} == expected
    assert not trainer.model.image_encoder.training and not trainer.model.text_encoder.training

    calls = text_call_counter(trainer)
    acc = trainer.test()
    assert 0.0 <= acc <= 100.0
    assert len(calls) == TEXT_CALLS_PER_EVAL[name]
    assert trainer.model._text_cache is None  # dropped after the evaluation


def test_coop_logs_loss_and_acc_and_saves_only_ctx(data_root, tmp_path):
    trainer = make_trainer("CoOp", data_root, tmp_path)
    summary = trainer.forward_backward(next(iter(trainer.train_loader_x)))
    assert set(summary) == {"loss", "acc"}
    trainer.save_model(0, str(tmp_path))
    saved = torch.load(os.path.join(tmp_path, "prompt_learner", "model.pth.tar-1"), weights_only=True)
    assert set(saved["state_dict"]) == {"ctx"}
    fresh = make_trainer("CoOp", data_root, tmp_path / "fresh")
    fresh.load_model(str(tmp_path), epoch=1)
    assert torch.equal(fresh.model.prompt_learner.ctx, trainer.model.prompt_learner.ctx)


def test_coop_middle_and_csc_train(data_root, tmp_path, log_lines):
    trainer = make_trainer("CoOp", data_root, tmp_path, extra=["TRAINER.COOP.CSC", True,
                                                               "TRAINER.COOP.CLASS_TOKEN_POSITION", "middle"])
    assert f"Trainable parameters: {N_CLASSES * 4 * 64:,}" in log_lines
    trainer.train()
    assert os.path.isfile(os.path.join(tmp_path, "prompt_learner", "model.pth.tar-1"))


def test_coop_rejects_bad_class_token_position(data_root, tmp_path):
    with pytest.raises(ValueError, match="CLASS_TOKEN_POSITION"):
        make_trainer("CoOp", data_root, tmp_path, extra=["TRAINER.COOP.CLASS_TOKEN_POSITION", "start"])


@pytest.mark.parametrize("name", ["CoOp", "CoCoOp"])
def test_official_coop_cocoop_checkpoint_loads(name, data_root, tmp_path):
    """Official files hold the prompt learner's own keys plus class-dependent buffers (dropped)."""
    trainer = make_trainer(name, data_root, tmp_path / "run")
    official = {k: torch.randn_like(v) for k, v in trainer.model.prompt_learner.state_dict().items()
                if k not in ("token_prefix", "token_suffix")}
    official["token_prefix"] = torch.zeros(1000, 1, 64)  # another class set: must be ignored
    official["token_suffix"] = torch.zeros(1000, 72, 64)
    folder = tmp_path / "official" / "prompt_learner"
    folder.mkdir(parents=True)
    torch.save({"state_dict": official, "epoch": 10, "optimizer": {}, "scheduler": {}, "val_result": None},
               folder / "model.pth.tar-10")
    trainer.load_model(str(tmp_path / "official"), epoch=10)
    state = trainer.model.prompt_learner.state_dict()
    for key, value in official.items():
        if key not in ("token_prefix", "token_suffix"):
            assert torch.equal(state[key], value), key
    assert state["token_prefix"].shape[0] == N_CLASSES


def test_official_ivlp_checkpoint_loads(data_root, tmp_path):
    trainer = make_trainer("IVLP", data_root, tmp_path / "run")
    official = {k: v.clone() for k, v in trainer.model.state_dict().items()
                if not k.startswith("prompt_learner.")}  # whole CustomCLIP, as the official saves it
    values = {"prompt_learner.ctx": torch.full((2, 64), 0.5), "image_encoder.VPT": torch.full((2, 128), 1.0),
              "image_encoder.transformer.resblocks.1.VPT_shallow": torch.full((2, 128), 2.0),
              "image_encoder.transformer.resblocks.2.VPT_shallow": torch.full((2, 128), 3.0),
              "text_encoder.transformer.resblocks.1.VPT_shallow": torch.full((2, 64), 4.0),
              "text_encoder.transformer.resblocks.2.VPT_shallow": torch.full((2, 64), 5.0),
              "prompt_learner.token_prefix": torch.zeros(7, 1, 64)}  # wrong class count: must be dropped
    official.update(values)
    folder = tmp_path / "official" / "VLPromptLearner"
    folder.mkdir(parents=True)
    torch.save({"state_dict": official, "epoch": 5, "optimizer": {}, "scheduler": {}, "val_result": None},
               folder / "model.pth.tar-5")
    trainer.load_model(str(tmp_path / "official"), epoch=5)
    pl = trainer.model.prompt_learner
    assert pl.ctx.eq(0.5).all() and pl.vision.vision_ctx.eq(1.0).all()
    assert pl.vision.vision_prompts[0].eq(2.0).all() and pl.vision.vision_prompts[1].eq(3.0).all()
    assert pl.text_prompts[0].eq(4.0).all() and pl.text_prompts[1].eq(5.0).all()
    assert pl.token_prefix.shape[0] == N_CLASSES


@pytest.mark.parametrize("name", ["ZeroshotCLIP", "ZeroshotCLIP2"])
def test_zero_shot_trains_nothing_and_evaluates(name, data_root, tmp_path, log_lines):
    trainer = make_trainer(name, data_root, tmp_path, prec="bf16")
    assert "Trainable parameters: 0" in log_lines
    assert trainer.get_model_names() == []
    calls = text_call_counter(trainer)
    acc = trainer.train()
    assert 0.0 <= acc <= 100.0 and calls == []
    assert any("nothing to train" in line for line in log_lines)
    trainer.save_model(0, str(tmp_path))  # no registered model: writes nothing
    assert not [f for _, _, files in os.walk(tmp_path) for f in files if f.startswith("model")]
    trainer.load_model(str(tmp_path))  # ignored, no error


def test_zero_shot2_templates_do_not_accumulate(data_root, tmp_path):
    first = make_trainer("ZeroshotCLIP2", data_root, tmp_path / "a")
    second = make_trainer("ZeroshotCLIP2", data_root, tmp_path / "b")
    expected = tuple(IMAGENET_TEMPLATES_SELECT) + ("a photo of a {}.",)
    assert first.model.templates == expected and second.model.templates == expected
    torch.testing.assert_close(first.model.text_features(), second.model.text_features())
    single = make_trainer("ZeroshotCLIP", data_root, tmp_path / "c", extra=["DATASET.TEMPLATE", "a {} shape."])
    assert single.model.templates == ("a {} shape.",)
