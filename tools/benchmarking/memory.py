"""Peak memory of a phase: CUDA ``max_memory_allocated``, or on a CPU the peak RSS since the phase started
(Linux ``/proc/self/clear_refs`` resets the high-water mark; without it, the process's maximum RSS)."""
import gc
import os
import resource


def rss_mib():
    """Current resident set size of this process (Linux ``/proc/self/statm``), MiB."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_rss_peak():
    """Reset this process's RSS high-water mark to its current RSS (Linux ``clear_refs`` 5); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_peak_mib():
    """``VmHWM`` (peak RSS since the process started or the last reset), MiB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class PhaseMemory:
    """Peak memory of one phase: ``start()`` then ``result(prefix)`` -> ``{prefix}_mem_base_mib``, ``_peak_mem_mib``."""

    def __init__(self, device):
        self.device = device
        self.kind = None

    def start(self):
        import torch

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / 2**20
            self.kind = "cuda_max_memory_allocated"
        else:
            self.base = rss_mib()
            self.kind = "cpu_peak_rss_since_phase_start" if reset_rss_peak() else "cpu_process_max_rss"

    def result(self, prefix):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self.kind == "cpu_peak_rss_since_phase_start":
            peak = rss_peak_mib()
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {f"{prefix}_mem_base_mib": self.base, f"{prefix}_peak_mem_mib": peak, "mem_kind": self.kind}
