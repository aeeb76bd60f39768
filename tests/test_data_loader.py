"""Transforms equal the §1.9 pipelines, loaders follow Dassl's semantics, batches have the contract keys."""
import random

import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from engine.data import DataManager
from engine.data.loader import build_data_loader
from engine.data.transforms import build_transform
from tests.fixtures_data import LAYOUTS, make_cfg

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _clip_cfg(root="", name="", **opts):
    base = dict(INPUT__SIZE=(32, 32), INPUT__INTERPOLATION="bicubic",
                INPUT__TRANSFORMS=["random_resized_crop", "random_flip", "normalize"],
                INPUT__PIXEL_MEAN=CLIP_MEAN, INPUT__PIXEL_STD=CLIP_STD)
    return make_cfg(root, name, **{**base, **opts})


def _img(w=48, h=40):
    g = torch.Generator().manual_seed(0)
    arr = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(arr)


def test_test_transform_is_shorter_side_resize_center_crop_normalize():
    tfm = build_transform(_clip_cfg(), is_train=False)
    ref = T.Compose([T.Resize(32, interpolation=InterpolationMode.BICUBIC), T.CenterCrop((32, 32)),
                     T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
    img = _img()
    assert torch.equal(tfm(img), ref(img))
    assert tfm(img).shape == (3, 32, 32)


def test_train_transform_is_rrcrop_flip_normalize():
    cfg = _clip_cfg()
    tfm = build_transform(cfg, is_train=True)
    kinds = [type(t).__name__ for t in tfm.transforms]
    assert kinds == ["RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    rrc = tfm.transforms[0]
    assert rrc.scale == (0.08, 1.0) and rrc.interpolation == InterpolationMode.BICUBIC and rrc.size == (32, 32)
    ref = T.Compose([T.RandomResizedCrop((32, 32), scale=(0.08, 1.0), interpolation=InterpolationMode.BICUBIC),
                     T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
    img = _img()
    torch.manual_seed(3)
    a = tfm(img)
    torch.manual_seed(3)
    assert torch.equal(a, ref(img))


def test_legacy_transform_choices_and_no_transform():
    cfg = _clip_cfg(INPUT__TRANSFORMS=["random_flip", "random_translation", "center_crop", "normalize"])
    tfm = build_transform(cfg, is_train=True)
    kinds = [type(t).__name__ for t in tfm.transforms]
    assert kinds == ["Resize", "Random2DTranslation", "RandomHorizontalFlip", "CenterCrop", "ToTensor", "Normalize"]
    translation = next(t for t in tfm.transforms if type(t).__name__ == "Random2DTranslation")
    assert translation.interpolation == InterpolationMode.BILINEAR  # Dassl's, even with bicubic configs
    random.seed(0)
    assert build_transform(cfg, is_train=True)(_img()).shape == (3, 32, 32)
    cfg = _clip_cfg(INPUT__TRANSFORMS=["random_crop"])
    kinds = [type(t).__name__ for t in build_transform(cfg, is_train=True).transforms]
    assert kinds == ["RandomCrop", "ToTensor"]
    assert build_transform(_clip_cfg(INPUT__NO_TRANSFORM=True), is_train=True) is None


def test_transform_log_lines(capsys):
    build_transform(_clip_cfg(), is_train=True)
    build_transform(_clip_cfg(), is_train=False)
    out = capsys.readouterr().out
    for line in ("Building transform_train", "+ random resized crop (size=(32, 32), scale=(0.08, 1.0))",
                 "+ random flip", "Building transform_test", "+ resize the smaller edge to 32",
                 "+ 32x32 center crop", "+ to torch tensor of range [0, 1]"):
        assert line in out


@pytest.fixture()
def dtd_root(tmp_path):
    LAYOUTS["DescribableTextures"][0](str(tmp_path))
    return tmp_path


def test_datamanager_batches_and_summary(dtd_root, capsys):
    cfg = _clip_cfg(dtd_root, "DescribableTextures", DATALOADER__TRAIN_X__BATCH_SIZE=4,
                    DATALOADER__TEST__BATCH_SIZE=5)
    dm = DataManager(cfg)
    assert (dm.num_classes, dm.classnames) == (3, ["banded", "blotchy", "zigzagged"])
    assert dm.lab2cname == {0: "banded", 1: "blotchy", 2: "zigzagged"}
    batch = next(iter(dm.train_loader_x))
    assert set(batch) == {"img", "label", "impath", "index", "domain"}
    assert batch["img"].dtype == torch.float32 and batch["img"].shape == (4, 3, 32, 32)
    assert batch["label"].dtype == torch.long and isinstance(batch["impath"], list)
    assert len(dm.train_loader_x) == 1  # 6 images, bs 4, drop_last
    assert isinstance(dm.train_loader_x.sampler, torch.utils.data.RandomSampler)
    test_batches = list(dm.test_loader)
    assert [len(b["label"]) for b in test_batches] == [5, 1]  # sequential, no drop
    assert torch.cat([b["index"] for b in test_batches]).tolist() == list(range(6))
    assert [p for b in test_batches for p in b["impath"]] == [d.impath for d in dm.dataset.test]
    out = capsys.readouterr().out
    assert "Loading dataset: DescribableTextures" in out
    for row in ("Dataset    DescribableTextures", "# classes  3", "# train_x  6", "# val      3", "# test     6"):
        assert row in out


def test_drop_last_only_when_enough_data(dtd_root):
    cfg = _clip_cfg(dtd_root, "DescribableTextures")
    dm = DataManager(cfg)
    small = dm.dataset.train_x[:3]
    loader = build_data_loader(cfg, small, 4, "RandomSampler", dm.tfm_train, is_train=True)
    assert loader.drop_last is False and len(loader) == 1
    loader = build_data_loader(cfg, dm.dataset.train_x, 4, "RandomSampler", dm.tfm_train, is_train=True)
    assert loader.drop_last is True


def test_no_transform_wrapper_resizes(dtd_root):
    dm = DataManager(_clip_cfg(dtd_root, "DescribableTextures", INPUT__NO_TRANSFORM=True))
    assert next(iter(dm.test_loader))["img"].shape[1:] == (3, 32, 32)


def test_k_transforms_and_img0(dtd_root):
    dm = DataManager(_clip_cfg(dtd_root, "DescribableTextures", DATALOADER__K_TRANSFORMS=2,
                               DATALOADER__RETURN_IMG0=True, DATALOADER__TRAIN_X__BATCH_SIZE=2))
    batch = next(iter(dm.train_loader_x))
    assert isinstance(batch["img"], list) and len(batch["img"]) == 2 and batch["img"][0].shape == (2, 3, 32, 32)
    assert batch["img0"].shape == (2, 3, 32, 32)
    assert next(iter(dm.test_loader))["img"].shape[1:] == (3, 32, 32)  # test: one transform
