"""``dassl.metrics``: ``compute_accuracy`` (Dassl's top-k accuracy in percent)."""

__all__ = ["compute_accuracy"]


def compute_accuracy(output, target, topk=(1, )):
    """``[top-k accuracy (%) as a 1-element tensor for k in topk]``; a tuple/list ``output`` uses its first item."""
    maxk = max(topk)
    batch_size = target.size(0)
    if isinstance(output, (tuple, list)):
        output = output[0]
    _, pred = output.topk(maxk, 1, True, True)
    pred = pred.t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    res = []
    for k in topk:
        correct_k = correct[:k].reshape(-1).float().sum(0, keepdim=True)
        res.append(correct_k.mul_(100.0 / batch_size))
    return res
