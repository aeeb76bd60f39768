"""The optimisation step of a trainer: zero grads, backward (non-finite check, GradScaler), gradient
averaging over ``torchrun`` ranks, optimiser step(s) (Dassl's ``model_backward_and_update``)."""
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
