"""Wall-clock timing of a call, synchronised with the device (CUDA work is asynchronous)."""
import time


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, steps, warmup, before_each=None):
    """Run ``fn`` ``warmup`` times untimed, then ``steps`` times; return the per-call seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        if before_each is not None:
            before_each()
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times
