"""``pip install -e .`` makes the harness importable from any folder without taking the name
``datasets`` (Hugging Face's); docs/API.md's examples run there; a weights file sets the input size
and names the model; tools/predict.py takes files, folders and globs."""
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from engine.api import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["circle", "square", "triangle"]


def _doc_blocks():
    with open(os.path.join(REPO, "docs", "API.md"), encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


@pytest.mark.slow
def test_editable_install_outside_the_repo_keeps_hugging_face_datasets(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=300)
    py = str(venv / "bin" / "python")
    r = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", REPO],
                       capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    fake = os.path.join(site, "datasets")  # stands in for Hugging Face's package
    os.makedirs(fake)
    with open(os.path.join(fake, "__init__.py"), "w") as f:
        f.write("HUGGING_FACE = True\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    examples = "\n".join(_doc_blocks()[:2])  # the import line and the build_model example
    script = textwrap.dedent('''
        import sys
        import datasets
        assert datasets.HUGGING_FACE, datasets.__file__
        import engine, trainers, repro, harness_tools.predict, harness_tools.sweep
        from engine.data.registry import DATASET_REGISTRY, datasets_package_name, import_dataset_packages
        assert datasets_package_name() == "harness_datasets"
        import_dataset_packages()
        assert DATASET_REGISTRY.get("ImageFolder").__module__ == "harness_datasets.image_folder"
        assert sys.modules["datasets"].HUGGING_FACE
        print("ENGINE", engine.__file__)
    ''') + examples + "\nprint('OK', probs.shape)\n"
    (work / "use_api.py").write_text(script)
    r = subprocess.run([py, "use_api.py"], capture_output=True, text=True, timeout=600, cwd=str(work),
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"ENGINE {os.path.join(REPO, 'engine', '__init__.py')}" in r.stdout
    assert "OK torch.Size([3, 3])" in r.stdout


def test_weights_file_sets_input_size_and_names_the_model(tmp_path):
    from engine.backbone.loader import build_random_clip

    path = tmp_path / "my_tiny_clip.pt"
    torch.save(build_random_clip("ViT-Tiny/16", seed=3).state_dict(), path)
    model = build_model("CoOp", CLASSES, config="configs/trainers/CoOp/vit_b16_ctxv1.yaml", device="cpu",
                        **{"MODEL.BACKBONE.PATH": str(path), "SEED": 1})
    assert tuple(model.cfg.INPUT.SIZE) == (32, 32)
    assert model.backbone == "my_tiny_clip.pt (weights file, image size 32)"
    assert "backbone my_tiny_clip.pt" in repr(model) and "ViT-B/16" not in repr(model)
    assert model.predict(torch.rand(1, 3, 32, 32)).shape == (1, 3)


def test_predict_takes_folders_and_globs(tmp_path, capsys):
    import importlib.util

    from PIL import Image

    spec = importlib.util.spec_from_file_location("predict_tool2", os.path.join(REPO, "tools", "predict.py"))
    predict = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(predict)
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for name in ("a.png", "b.jpg", "sub/c.png"):
        Image.new("RGB", (40, 40), (10, 200, 30)).save(tmp_path / "imgs" / name)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    names = tmp_path / "names.txt"
    names.write_text("\n".join(CLASSES) + "\n")
    tiny = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)"]
    rc = predict.main(["--trainer", "ZeroshotCLIP", "--classnames", str(names), "--top-k", "1",
                       str(tmp_path / "imgs"), str(tmp_path / "imgs" / "*.png"), *tiny])
    assert rc == 0
    shown = [line.split(":")[0] for line in capsys.readouterr().out.strip().splitlines()]
    imgs = str(tmp_path / "imgs")
    assert shown == [f"{imgs}/a.png", f"{imgs}/b.jpg", f"{imgs}/sub/c.png", f"{imgs}/a.png"]
    assert predict.main(["--trainer", "ZeroshotCLIP", "--classnames", str(names), str(tmp_path / "x*.png"),
                         *tiny]) == 2
    assert "no file matches" in capsys.readouterr().err
