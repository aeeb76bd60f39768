"""Shape checks shared by the prompted encoders: prompt tensor -> sequence-first tokens."""
import torch


def prompt_tokens(prompt: torch.Tensor, batch: int, width: int, like: torch.Tensor, what: str) -> torch.Tensor:
    """Return ``prompt`` as sequence-first tokens ``[n, batch, width]`` in ``like``'s dtype/device.

    ``prompt`` is ``[n, width]`` (shared, broadcast over the batch without copying) or
    ``[batch, n, width]`` (one prompt per sequence). Casting keeps autograd, so callers may hold
    fp32 master prompts for a low-precision encoder. Wrong shapes raise one-line ValueErrors.
    """
    if not isinstance(prompt, torch.Tensor):
        raise ValueError(f"{what}: expected a tensor, got {type(prompt).__name__}")
    p = prompt.to(device=like.device, dtype=like.dtype)
    if p.dim() == 2 and p.shape[1] == width:
        return p.unsqueeze(1).expand(-1, batch, -1)
    if p.dim() == 3 and p.shape[0] == batch and p.shape[2] == width:
        return p.permute(1, 0, 2)
    raise ValueError(f"{what}: expected shape [n, {width}] or [{batch}, n, {width}], got {list(prompt.shape)}")


def replace_tokens(x: torch.Tensor, start: int, tokens: torch.Tensor, in_place: bool = True) -> torch.Tensor:
    """``x`` (sequence-first ``[L, N, D]``) with positions ``start .. start+n-1`` replaced by ``tokens`` [n, N, D].

    Same values and gradients as ``torch.cat([x[:start], tokens, x[start+n:]])`` (the gradient reaching
    the replaced positions of ``x`` is zero). ``in_place`` writes into ``x`` (one small copy forward,
    one gradient copy backward instead of a full copy forward and zero-filled slices backward); only
    for an ``x`` that no one else reads afterwards (a block's fresh output).
    """
    end = start + tokens.shape[0]
    if not in_place:
        return torch.cat([x[:start], tokens, x[end:]], dim=0)
    x[start:end] = tokens
    return x
