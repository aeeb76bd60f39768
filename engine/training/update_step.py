"""The optimisation step of a trainer: zero grads, backward (non-finite check, GradScaler), gradient
averaging over ``torchrun`` ranks, optimiser step(s) (Dassl's ``model_backward_and_update``).

Several losses with gradient surgery (:meth:`UpdateStepMixin.update_step`): a method whose
``compute_loss`` returns ``{name: loss}`` gets one gradient per loss and combines them in the
trainer hook ``combine_gradients(grads, params)`` (default: their sum, i.e. the gradient of the
summed loss) before the optimiser step; the order against the GradScaler, the rank average and
the non-finite check is fixed and listed in ``update_step``'s docstring.
"""
import torch

from engine.distributed import average_gradients

__all__ = ["UpdateStepMixin"]


class UpdateStepMixin:
    """Update-step methods of ``TrainerBase`` (uses ``_models``, ``_optims``, ``scaler``)."""

    def detect_anomaly(self, loss):
        """Raise ``FloatingPointError`` (one line: epoch, batch, the loss terms, what to try) if ``loss``
        is not finite. The terms are ``self.loss_terms`` (a trainer's loss summary) when set."""
        if not torch.isfinite(loss).all():
            from engine.nonfinite import nonfinite_loss_message

            raise FloatingPointError(nonfinite_loss_message(self, loss))

    def model_zero_grad(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].zero_grad()

    def model_backward(self, loss):
        """Non-finite check, then ``backward`` (through the GradScaler when amp on CUDA)."""
        self.detect_anomaly(loss)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def optimized_parameters(self, names=None):
        """The tensors that the registered optimisers of ``names`` update (each once, in order)."""
        seen, params = set(), []
        for name in self.get_model_names(names):
            optim = self._optims[name]
            for group in (optim.param_groups if optim is not None else ()):
                for p in group["params"]:
                    if id(p) not in seen:
                        seen.add(id(p))
                        params.append(p)
        return params

    def model_update(self, names=None):
        """Average the gradients over ranks (distributed runs), then step the optimiser(s)."""
        average_gradients(self.optimized_parameters(names))
        self._step_optimizers(names)

    def _step_optimizers(self, names=None):
        """Step every registered optimiser of ``names`` (through the GradScaler when there is one, which
        is then updated once)."""
        stepped = False
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                if self.scaler is not None:
                    self.scaler.step(self._optims[name])
                else:
                    self._optims[name].step()
                stepped = True
        if stepped and self.scaler is not None:
            self.scaler.update()

    def model_backward_and_update(self, loss, names=None):
        """Zero grads, backward (with the non-finite check), optimizer step(s)."""
        self.model_zero_grad(names)
        self.model_backward(loss)
        self.model_update(names)

    # ------------------------------------------------------------- several losses, gradient surgery
    def combine_gradients(self, grads, params):
        """Hook: the gradient of each tensor in ``params`` from the per-loss gradients ``grads``
        (``{loss name: [gradient or None per tensor]}``, unscaled and averaged over ranks).

        Default: the sum over the losses (None where no loss reaches the tensor). Override for
        projection or surgery (e.g. ProGrad); return a list aligned with ``params``.
        """
        out = []
        for per_param in zip(*grads.values()):
            present = [g for g in per_param if g is not None]
            out.append(None if not present else present[0] if len(present) == 1 else torch.stack(present).sum(0))
        return out

    def update_step(self, losses, names=None):
        """One optimiser step from several named losses ``{name: loss}`` (a tensor counts as one).

        The order, fixed for every method and precision:

        1. zero the gradients of the optimisers of ``names`` (default: every registered model);
        2. for each loss in the dict's order: the non-finite check of its value (``detect_anomaly``:
           a one-line ``FloatingPointError``), then ``backward`` (of ``scaler.scale(loss)`` when a
           GradScaler is active, amp on CUDA; the graph is kept for the next loss); the gradients of
           ``optimized_parameters(names)`` are taken aside, one list per loss;
        3. each loss's gradients are averaged over the ``torchrun`` ranks (``average_gradients``),
           so the steps below see the one-process gradients and every rank computes the same update;
        4. unscale (GradScaler only): the summed gradients go through ``scaler.unscale_`` (whose
           inf/nan check, on the averaged gradients, makes ``scaler.step`` skip that optimiser's
           step on every rank alike) and each loss's gradients are divided by the scale;
        5. ``combine_gradients(grads, params)`` (the surgery hook) gives each tensor's gradient;
        6. the optimiser step(s) (``scaler.step`` and ``scaler.update`` with a GradScaler).

        Methods returning one loss keep :meth:`model_backward_and_update` (zero, backward, average,
        step), which this equals for a single loss and the default hook.
        """
        if torch.is_tensor(losses):
            losses = {"loss": losses}
        if not losses:
            raise ValueError("update_step needs at least one loss")
        self.model_zero_grad(names)
        params = self.optimized_parameters(names)
        grads, last = {}, len(losses) - 1
        for i, (name, loss) in enumerate(losses.items()):
            self.detect_anomaly(loss)
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward(retain_graph=i < last)
            grads[name] = [p.grad for p in params]
            for p in params:
                p.grad = None
        for name, per_param in grads.items():
            for p, g in zip(params, per_param):
                p.grad = g
            average_gradients(params)
            grads[name] = [p.grad for p in params]
        if self.scaler is not None:
            self._unscale_losses(grads, params, names)
        for p, g in zip(params, self.combine_gradients(grads, params)):
            p.grad = g
        self._step_optimizers(names)

    def _unscale_losses(self, grads, params, names):
        """Step 4 of :meth:`update_step`: ``scaler.unscale_`` on the summed gradients (its inf check
        decides the step), each loss's gradients divided by the scale."""
        per_loss = list(grads.values())
        for i, p in enumerate(params):
            present = [g[i] for g in per_loss if g[i] is not None]
            p.grad = None if not present else torch.stack(present).sum(0)
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self.scaler.unscale_(self._optims[name])
        inv_scale = 1.0 / self.scaler.get_scale()
        for name, per_param in grads.items():
            grads[name] = [None if g is None else g * inv_scale for g in per_param]
