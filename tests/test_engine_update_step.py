"""The several-loss update step (``engine.training.update_step``): one loss equals the one-loss
step bit for bit; the default hook sums the per-loss gradients; with a GradScaler the surgery hook
sees the unscaled gradients (the step is the unscaled run's, exactly, since the scale is a power of
two) and a non-finite gradient skips the step of its optimiser; a non-finite loss stops the step
before its backward, the hook and any optimiser step. The order against the ``torchrun`` gradient
average is checked in tests/test_distributed.py (ProGrad)."""
import pytest
import torch

from engine.trainer import TrainerBase
from engine.training.update_step import UpdateStepMixin


class Toy(UpdateStepMixin):
    """The engine's update step around two registered linear models, each with its SGD optimiser."""

    get_model_names = TrainerBase.get_model_names

    def __init__(self, scaler=None, hook=None):
        torch.manual_seed(0)
        self.a, self.b = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)
        self._models = {"a": self.a, "b": self.b}
        self._optims = {"a": torch.optim.SGD(self.a.parameters(), lr=0.1, momentum=0.9),
                        "b": torch.optim.SGD(self.b.parameters(), lr=0.1)}
        self.scaler, self.hook, self.seen = scaler, hook, []

    def combine_gradients(self, grads, params):
        self.seen.append({k: [None if g is None else g.clone() for g in v] for k, v in grads.items()})
        return self.hook(grads, params) if self.hook else super().combine_gradients(grads, params)

    def losses(self, x):
        h = self.a(x)
        return {"first": self.b(h).pow(2).mean(), "second": h.abs().mean()}  # "second" does not reach b

    def params(self):
        return [p.detach().clone() for p in [*self.a.parameters(), *self.b.parameters()]]


X = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))


def test_one_loss_is_the_one_loss_step_bit_for_bit():
    one, many = Toy(), Toy()
    for _ in range(3):
        one.model_backward_and_update(one.losses(X)["first"])
        many.update_step({"first": many.losses(X)["first"]})
    assert all(torch.equal(p, q) for p, q in zip(one.params(), many.params()))


def test_default_hook_sums_the_per_loss_gradients():
    summed, split = Toy(), Toy()
    losses = summed.losses(X)
    summed.model_backward_and_update(losses["first"] + losses["second"])
    split.update_step(split.losses(X))
    for p, q in zip(summed.params(), split.params()):
        torch.testing.assert_close(p, q, atol=1e-7, rtol=1e-6)
    grads = split.seen[0]
    assert list(grads) == ["first", "second"]
    assert all(g is None for g in grads["second"][2:])  # b's tensors get no gradient from "second"


def test_surgery_sees_unscaled_gradients_and_steps_like_the_unscaled_run():
    def keep_first(grads, params):
        return grads["first"]

    plain = Toy(hook=keep_first)
    scaled = Toy(scaler=torch.amp.GradScaler("cpu", init_scale=2.0 ** 12), hook=keep_first)
    for _ in range(2):
        plain.update_step(plain.losses(X))
        scaled.update_step(scaled.losses(X))
    for seen_plain, seen_scaled in zip(plain.seen, scaled.seen):
        for name in ("first", "second"):
            for g, h in zip(seen_plain[name], seen_scaled[name]):
                assert (g is None and h is None) or torch.equal(g, h)
    assert all(torch.equal(p, q) for p, q in zip(plain.params(), scaled.params()))


def test_a_non_finite_gradient_skips_the_step_and_lowers_the_scale():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    toy = Toy(scaler=scaler)
    before = toy.params()
    losses = toy.losses(X)
    huge = losses["second"] * 3e38  # finite loss value, inf once scaled by 4096 in backward
    toy.update_step({"first": losses["first"], "second": huge})
    after = toy.params()
    # GradScaler's rule, per optimiser: a (inf gradient) is skipped, b (finite) steps
    assert all(torch.equal(p, q) for p, q in zip(before[:2], after[:2]))
    assert not any(torch.equal(p, q) for p, q in zip(before[2:], after[2:]))
    assert scaler.get_scale() == 2.0 ** 11


def test_a_non_finite_loss_stops_before_its_backward_and_before_the_hook():
    toy = Toy()
    losses = toy.losses(X)
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        toy.update_step({"first": losses["first"], "second": losses["second"] * float("nan")})
    assert toy.seen == []  # the hook never ran, no step
    with pytest.raises(FloatingPointError):
        Toy().update_step({"first": torch.tensor(float("inf"), requires_grad=True)})
