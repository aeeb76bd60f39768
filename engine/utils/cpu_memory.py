"""Return large freed CPU blocks to the OS at once (glibc ``mallopt(M_MMAP_THRESHOLD)``).

PyTorch's CPU tensors come from ``malloc``. glibc raises its mmap threshold each time a large
mmapped block is freed, after which large tensors come from the heap, and freed heap memory is kept
by the process: a training step that frees and re-allocates gigabytes of activations (the chunked,
checkpointed text encoder) then shows a resident size about twice its live tensors. Fixing the
threshold keeps blocks above it mmapped, so they go back to the OS when freed. Linux/glibc only;
elsewhere a no-op. Process-wide, applied once.
"""
import ctypes
import platform

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
DEFAULT_THRESHOLD = 1 << 20  # 1 MiB: every activation-sized tensor

_applied = False


def release_large_frees(threshold_bytes: int = DEFAULT_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold (default 1 MiB). True when applied (now or earlier)."""
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False
    _applied = mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(int(threshold_bytes))) == 1
    return _applied
