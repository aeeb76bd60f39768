"""Progress of long loops: a tqdm bar on an interactive terminal, log lines otherwise (rank 0 only)."""
import sys
import time

from tqdm import tqdm

from engine.distributed import is_main_process
from engine.utils.logger import get_logger

__all__ = ["progress"]

logger = get_logger()


def progress(iterable, desc, log_without_tty=True):
    """tqdm bar on stderr on an interactive terminal; otherwise (batch jobs, redirected output) a log
    line at every 10% of the loop, so long evaluations still show progress in ``log.txt`` (training
    has its own iteration lines: ``log_without_tty=False``). No bar on ranks other than 0."""
    if not is_main_process():
        return iterable
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)
    return _logged_progress(iterable, desc) if log_without_tty else iterable


def _logged_progress(iterable, desc, parts=10):
    total = len(iterable) if hasattr(iterable, "__len__") else 0
    marks = {max(1, round(total * k / parts)) for k in range(1, parts)} if total >= 2 * parts else set()
    start = time.time()
    for i, item in enumerate(iterable, 1):
        yield item
        if i in marks:
            logger.info(f"{desc}: {i}/{total} batches ({time.time() - start:.0f} s)")
