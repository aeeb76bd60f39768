"""The Python API (``engine.api``), ``tools/predict.py`` and the executed example of docs/API.md."""
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

import train
from engine.api import build_model, load_model
from tests.fixtures_data import make_shapes

CLASSES = ["circle", "square", "triangle"]
TINY = {"MODEL.BACKBONE.RANDOM_INIT": True, "INPUT.SIZE": (32, 32), "SEED": 1}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COOP_CFG = os.path.join(REPO_ROOT, "configs", "trainers", "CoOp", "vit_b16_ctxv1.yaml")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A one-epoch CoOp run on Shapes (tiny backbone), then its evaluation with saved logits."""
    root = tmp_path_factory.mktemp("api")
    make_shapes(root / "data", classes=tuple(CLASSES), counts={"train": 4, "val": 1, "test": 2}, size=32)
    common = ["--root", str(root / "data"), "--seed", "1", "--trainer", "CoOp",
              "--dataset-config-file", os.path.join(REPO_ROOT, "configs/datasets/shapes.yaml"),
              "--config-file", COOP_CFG,
              "MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
              "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1"]
    out = root / "run"
    assert train.main(["--output-dir", str(out), *common]) == 0
    ev = root / "eval"
    assert train.main(["--output-dir", str(ev), "--eval-only", "--model-dir", str(out), "--load-epoch", "1",
                       *common, "TEST.SAVE_PREDICTIONS", "True"]) == 0
    return out, ev


def test_build_model_predicts_from_pil_and_tensors(repo_root):
    model = build_model("CoOp", CLASSES, backbone="ViT-Tiny/16", config=COOP_CFG,
                        device="cpu", **TINY)
    image = Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype("uint8"))
    batch = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    probs = model.predict([image, *batch])
    assert probs.shape == (3, 3) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))
    # tensors at the model's size: only normalised, then the trainer's own inference
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (model.cfg.INPUT.PIXEL_MEAN, model.cfg.INPUT.PIXEL_STD))
    x = (batch - mean) / std
    with torch.no_grad():
        expected = model.trainer.model(x).float().softmax(-1)
    torch.testing.assert_close(probs[1:], expected, rtol=0, atol=1e-6)
    # the PIL image goes through the run's test transform
    from engine.data.transforms import build_transform

    with torch.no_grad():
        pil_logits = model.trainer.model(build_transform(model.cfg, is_train=False)(image)[None])
    torch.testing.assert_close(probs[:1], pil_logits.float().softmax(-1), rtol=0, atol=1e-6)
    top = model.topk(image, k=2)
    assert len(top) == 1 and len(top[0]) == 2 and top[0][0][1] >= top[0][1][1]
    text, feats = model.text_features(), model.image_features(batch)
    assert text.shape == (3, 96) and feats.shape == (2, 96)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    logit_scale = model.network.logit_scale.exp().item()
    torch.testing.assert_close((logit_scale * feats @ text.t()).softmax(-1), probs[1:], rtol=0, atol=1e-5)


def test_input_settings_follow_the_backbone_unless_set():
    model = build_model("ZeroshotCLIP", CLASSES, backbone="ViT-Tiny/16", device="cpu",
                        **{"MODEL.BACKBONE.RANDOM_INIT": True})
    cfg = model.cfg
    assert cfg.INPUT.SIZE == (32, 32) and cfg.INPUT.INTERPOLATION == "bicubic"
    assert cfg.INPUT.PIXEL_MEAN == [0.48145466, 0.4578275, 0.40821073] and "normalize" in cfg.INPUT.TRANSFORMS
    other = build_model("ZeroshotCLIP", CLASSES, backbone="ViT-Tiny/16", device="cpu",
                        **{"MODEL.BACKBONE.RANDOM_INIT": True, "INPUT.PIXEL_MEAN": [0.5, 0.5, 0.5]})
    assert other.cfg.INPUT.PIXEL_MEAN == [0.5, 0.5, 0.5] and other.cfg.INPUT.SIZE == (32, 32)
    assert model.predict(torch.rand(3, 32, 32)).shape == (1, 3)


def test_load_model_equals_the_runs_evaluation(run_dir):
    out, ev = run_dir
    saved = np.load(ev / "predictions.npz")
    model = load_model(str(out), CLASSES, epoch=1)
    assert model.cfg.TRAINER.NAME == "CoOp" and model.cfg.MODEL.BACKBONE.NAME == "ViT-Tiny/16"
    images = [Image.open(p) for p in saved["impath"]]
    logits = model.logits(images)
    np.testing.assert_allclose(logits.numpy(), saved["logits"], rtol=0, atol=1e-4)


def test_load_model_without_record_needs_the_trainer(run_dir, tmp_path):
    import shutil

    out, _ = run_dir
    copy = tmp_path / "official_like"
    shutil.copytree(out, copy)
    os.remove(copy / "run_record.json")
    with pytest.raises(ValueError, match="has no run_record.json: pass trainer="):
        load_model(str(copy), CLASSES)
    model = load_model(str(copy), CLASSES, trainer="CoOp", config=COOP_CFG, device="cpu",
                       **{"MODEL.BACKBONE.NAME": "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT": True,
                          "INPUT.SIZE": (32, 32), "SEED": 1})
    reference = load_model(str(out), CLASSES)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model.logits(x), reference.logits(x))
    with pytest.raises(FileNotFoundError, match="model.pth.tar-7"):
        load_model(str(out), CLASSES, epoch=7)


def test_predict_tool(run_dir, tmp_path, capsys, repo_root):
    import importlib.util

    spec = importlib.util.spec_from_file_location("predict_tool", os.path.join(repo_root, "tools", "predict.py"))
    predict = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(predict)
    out, ev = run_dir
    names = tmp_path / "names.txt"
    names.write_text("\n".join(CLASSES) + "\n")
    images = [str(p) for p in np.load(ev / "predictions.npz")["impath"][:2]]
    assert predict.main(["--model-dir", str(out), "--classnames", str(names), "--top-k", "2",
                         "--json", str(tmp_path / "p.json"), *images]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, image in zip(lines, images):
        assert re.fullmatch(rf"{re.escape(image)}: (circle|square|triangle) [01]\.\d{{4}}, "
                            rf"(circle|square|triangle) [01]\.\d{{4}}", line)
    assert (tmp_path / "p.json").is_file()
    assert predict.main(["--model-dir", str(out), "--classnames", str(tmp_path / "none.txt"), images[0]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --classnames: no file at")
    assert predict.main(["--classnames", str(names), images[0]]) == 2
    assert "pass --model-dir" in capsys.readouterr().err


def _doc_blocks(repo_root):
    with open(os.path.join(repo_root, "docs", "API.md"), encoding="utf-8") as f:
        text = f.read()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_docs_api_example_runs(run_dir, repo_root, monkeypatch, capsys):
    blocks = _doc_blocks(repo_root)
    assert len(blocks) >= 3  # the import line, the example, the trained-run example
    monkeypatch.chdir(repo_root)
    namespace = {"RUN_DIR": str(run_dir[0])}
    for block in blocks:
        exec(compile(block, "docs/API.md", "exec"), namespace)
    assert namespace["probs"].shape == (3, 3)
    assert "PromptModel(CoOp, backbone ViT-Tiny/16 (random weights), 3 classes, cpu)" in capsys.readouterr().out
