"""How the prompted text encoder spends compute and memory (``MODEL.TEXT_ENCODER.*``).

``TextPlan`` holds four settings:

* ``truncate`` (``MODEL.TEXT_ENCODER.TRUNCATE``, default True): CLIP's text transformer is causal,
  so the feature read at a prompt's EOT token depends only on positions up to it. A pass therefore
  runs only the first ``max EOT index + 1`` positions of the class set (exact; the official code
  always runs all 77). False runs all ``context_length`` positions.
* ``memory_plan`` (``MODEL.TEXT_ENCODER.MEMORY_PLAN``: ``auto`` | ``on`` | ``off``): encode the rows
  (class prompts) in chunks and, when gradients are needed, recompute each chunk's block activations
  in the backward pass (activation checkpointing) instead of keeping them. ``auto`` turns it on for
  passes of more than ``auto_tokens`` tokens (rows x positions); ``on`` always; ``off`` never (the
  plain computation). Loss and gradients are the same either way (up to float summation order).
* ``chunk_size`` (``MODEL.TEXT_ENCODER.CHUNK_SIZE``, default 0): rows per chunk when the plan is
  on; 0 = as many rows as fit in ``auto_tokens`` tokens.
* ``auto_tokens`` (``MODEL.TEXT_ENCODER.AUTO_TOKENS``, default 16384): the ``auto`` threshold. With
  ViT-B/16 widths in fp32 the plain computation keeps about 0.6 MB of activations per token, so the
  default switches the plan on above roughly 10 GB (e.g. CoMMA's 77-position pass over more than
  212 classes, or MaPLe's 18-position pass over ImageNet's names above 910 classes).

Without gradients (evaluation, fixed text features) the plan only chunks: nothing is kept.
"""
from dataclasses import dataclass

MEMORY_PLANS = ("auto", "on", "off")


@dataclass(frozen=True)
class TextPlan:
    truncate: bool = True
    memory_plan: str = "auto"
    chunk_size: int = 0
    auto_tokens: int = 16384

    def __post_init__(self):
        if self.memory_plan not in MEMORY_PLANS:
            raise ValueError(f"MODEL.TEXT_ENCODER.MEMORY_PLAN must be one of {MEMORY_PLANS}, got {self.memory_plan!r}")
        if int(self.chunk_size) < 0:
            raise ValueError(f"MODEL.TEXT_ENCODER.CHUNK_SIZE must be >= 0 (0 = automatic), got {self.chunk_size}")
        if int(self.auto_tokens) < 1:
            raise ValueError(f"MODEL.TEXT_ENCODER.AUTO_TOKENS must be >= 1, got {self.auto_tokens}")

    @classmethod
    def from_cfg(cls, cfg):
        """Read ``cfg.MODEL.TEXT_ENCODER`` (defaults when the node is absent)."""
        node = cfg.MODEL.get("TEXT_ENCODER") if "MODEL" in cfg else None
        if node is None:
            return cls()
        plan = str(node.MEMORY_PLAN)
        plan = {"true": "on", "false": "off"}.get(plan.lower(), plan.lower())
        return cls(truncate=bool(node.TRUNCATE), memory_plan=plan, chunk_size=int(node.CHUNK_SIZE),
                   auto_tokens=int(node.AUTO_TOKENS))

    def active(self, rows: int, length: int) -> bool:
        """Whether a pass of ``rows`` sequences of ``length`` positions is chunked (and checkpointed)."""
        if self.memory_plan == "off":
            return False
        return self.memory_plan == "on" or rows * length > self.auto_tokens

    def rows_per_chunk(self, rows: int, length: int) -> int:
        if self.chunk_size > 0:
            return min(rows, int(self.chunk_size))
        return max(1, min(rows, int(self.auto_tokens) // max(1, length)))
