"""Tiny-CLIP pretraining resumes from its periodic state with the weights of an uninterrupted run,
prints an ETA, and --stop-after stops on purpose."""
import os

import pytest
import torch

from demo.tiny_pretrain import Recipe, checkpoint_path, ensure_pretrained, pretrain, weights_path

TINY = Recipe(pool_size=200, steps=6, batch_size=8, warmup_steps=2, colour_curriculum=3, vision_layers=1,
              text_layers=1, vision_width=64, text_width=64, embed_dim=32)


@pytest.mark.slow
def test_stopped_and_resumed_pretraining_equals_an_uninterrupted_one(tmp_path, capsys):
    whole, _ = pretrain(TINY, log_every=0)
    assert ensure_pretrained(TINY, str(tmp_path), log_every=2, checkpoint_every=2, stop_after=3) is None
    partial = checkpoint_path(TINY, str(tmp_path))
    assert os.path.isfile(partial) and not os.path.exists(weights_path(TINY, str(tmp_path)))
    assert torch.load(partial, weights_only=True)["step"] == 3
    path = ensure_pretrained(TINY, str(tmp_path), log_every=2, checkpoint_every=2)
    assert path == weights_path(TINY, str(tmp_path)) and not os.path.exists(partial)
    out = capsys.readouterr().out
    assert "resumed at step 3/6" in out and "ETA 0:00:" in out
    resumed = torch.load(path, weights_only=True)
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed[k]), k


def test_steps_change_the_digest():
    assert Recipe(steps=300).digest() != Recipe().digest()
