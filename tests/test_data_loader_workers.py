"""Loader workers: augmentation randomness does not depend on DATALOADER.NUM_WORKERS (seeded per pass
and sample), so NUM_WORKERS is capped to the CPUs available, with one log line explaining it."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data import loader as loader_mod
from engine.data.datum import Datum
from engine.data.loader import build_data_loader, loader_workers, sample_seed, seeded_rngs
from engine.data.transforms import build_transform
from tests.fixtures_data import make_cfg


def _noise_images(root, n=6):
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        path = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
        items.append(Datum(impath=str(path), label=i % 2, classname=f"c{i % 2}"))
    return items


def _cfg(workers):
    cfg = make_cfg(INPUT__SIZE=(24, 24), INPUT__TRANSFORMS=["random_resized_crop", "random_flip", "normalize"])
    cfg.DATALOADER.NUM_WORKERS = workers
    return cfg


def _two_epochs(items, workers, seed=7):
    cfg = _cfg(workers)
    torch.manual_seed(seed)
    loader = build_data_loader(cfg, items, 3, "RandomSampler", build_transform(cfg, is_train=True), is_train=True)
    epochs = []
    for _ in range(2):
        epochs.append([(b["index"].clone(), b["img"].clone()) for b in loader])
    return epochs, torch.rand(1).item()  # and where the main RNG ended


@pytest.mark.parametrize("workers", [1, 2])
def test_same_seed_same_augmented_batches_for_any_worker_count(tmp_path, workers, monkeypatch):
    monkeypatch.setattr(loader_mod, "available_cpus", lambda: 8)
    items = _noise_images(tmp_path)
    ref, ref_next = _two_epochs(items, 0)
    got, got_next = _two_epochs(items, workers)
    assert ref_next == got_next  # the main process's RNG advanced the same way
    for ref_epoch, got_epoch in zip(ref, got):
        for (ri, rimg), (gi, gimg) in zip(ref_epoch, got_epoch):
            assert torch.equal(ri, gi) and torch.equal(rimg, gimg)
    # augmentation is random: two epochs differ, and a sample is not its un-augmented self
    assert not torch.equal(ref[0][0][1], ref[1][0][1]) or not torch.equal(ref[0][0][0], ref[1][0][0])
    other, _ = _two_epochs(items, 0, seed=8)
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(ref[0], other[0]))


def test_seeded_rngs_restore_the_callers_streams():
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    with seeded_rngs(sample_seed(123, 4)):
        inside = (random.random(), np.random.rand(), torch.rand(1).item())
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    with seeded_rngs(sample_seed(123, 4)):
        assert (random.random(), np.random.rand(), torch.rand(1).item()) == inside
    assert sample_seed(123, 4) != sample_seed(123, 5) != sample_seed(124, 4)
    assert 0 <= sample_seed(-5, 10 ** 6) < 2 ** 63


def test_workers_capped_to_available_cpus_logged_once(monkeypatch, capsys):
    monkeypatch.setattr(loader_mod, "available_cpus", lambda: 2)
    monkeypatch.setattr(loader_mod, "_CAPS_LOGGED", set())
    assert loader_workers(0) == 0 and loader_workers(2) == 2
    assert capsys.readouterr().out == ""
    assert loader_workers(8) == 2 and loader_workers(8) == 2
    out = capsys.readouterr().out.splitlines()
    assert out == ["Using 2 data loader workers instead of DATALOADER.NUM_WORKERS 8: this process may use 2 CPUs "
                   "(results do not depend on the worker count; set DATALOADER.NUM_WORKERS 2 to skip this message)"]
    assert loader_workers(4) == 2 and len(capsys.readouterr().out.splitlines()) == 1  # another request: once more


def test_loader_uses_the_capped_count_without_torch_warning(tmp_path, monkeypatch, recwarn):
    monkeypatch.setattr(loader_mod, "_CAPS_LOGGED", set())
    cpus = loader_mod.available_cpus()
    items = _noise_images(tmp_path, n=4)
    cfg = _cfg(cpus + 6)
    loader = build_data_loader(cfg, items, 2, "SequentialSampler", build_transform(cfg, is_train=False),
                               is_train=False)
    assert loader.num_workers == cpus
    assert len(list(loader)) == 2
    assert not [w for w in recwarn if "worker" in str(w.message)]
