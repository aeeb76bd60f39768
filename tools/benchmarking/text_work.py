"""Text-encoder work: rows and positions of every ``PromptedTextEncoder`` pass (forward hooks)."""


class TextPasses:
    """Forward hooks on every ``PromptedTextEncoder`` of a model, recording ``(rows, length)`` per call.

    ``length`` and ``rows`` come from the encoder's ``last_shape`` (positions actually run) when the
    measured code has it; else from the input embeddings ``[rows, context_length, D]`` ("inferred").
    """

    def __init__(self, model):
        from engine.backbone import PromptedTextEncoder

        self.calls = []
        self.handles = [m.register_forward_hook(self._hook, with_kwargs=True)
                        for m in model.modules() if isinstance(m, PromptedTextEncoder)]

    def _hook(self, module, args, kwargs, output):
        shape = getattr(module, "last_shape", None)
        if shape is not None:
            self.calls.append((int(shape[0]), int(shape[1]), "last_shape"))
        else:
            emb = args[0] if args else kwargs["embeddings"]
            self.calls.append((int(emb.shape[0]), int(emb.shape[1]), "inferred"))

    def clear(self):
        self.calls = []

    def summary(self, prefix):
        """``{prefix}_text_passes/_rows/_len/_tokens`` of the calls since ``clear`` (None when there were none)."""
        calls = self.calls
        rows = sum(c[0] for c in calls)
        return {f"{prefix}_text_passes": len(calls), f"{prefix}_text_rows": rows if calls else None,
                f"{prefix}_text_len": max(c[1] for c in calls) if calls else None,
                f"{prefix}_text_tokens": sum(c[0] * c[1] for c in calls) if calls else None,
                f"{prefix}_text_len_source": calls[-1][2] if calls else None}

    def remove(self):
        for handle in self.handles:
            handle.remove()
