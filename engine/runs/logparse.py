"""Read Dassl-format ``log.txt`` files: result blocks, end-of-training signals, run status.

Log contract (Dassl's and the official forks' log lines): training ends with ``Finish training`` (Dassl >= 0.6.1,
our engine) or ``Finished training`` (MaPLe/COMMA forks); every evaluation prints::

    => result
    * total: 2,465
    * correct: 2,302
    * accuracy: 93.4%        (93.40% in Dassl < 0.6.2)
    * error: 6.6%
    * macro_f1: 92.8%

Our harness appends to ``log.txt`` on rerun; official Dassl writes ``log.txt-<timestamp>`` instead.
Both are handled: the newest file that holds a valid result wins (:func:`read_run_result`).
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field

END_SIGNALS = ("Finish training", "Finished training")
RESULT_HEADER = "=> result"
_ITEM = re.compile(r"^\* ([A-Za-z0-9_ ]+?): ([-+]?[\d,]*\.?\d+(?:[eE][-+]?\d+)?)(%?)$")

#: run kinds: a ``train`` log is complete only with a result block after its last end signal;
#: an ``eval`` log (``--eval-only``) is complete with any result block.
KINDS = ("train", "eval")


@dataclass
class ResultBlock:
    """One ``=> result`` block: ``metrics`` maps name -> float (percent for ``%`` items), ``line`` its index."""

    line: int
    metrics: dict = field(default_factory=dict)

    @property
    def accuracy(self):
        return self.metrics.get("accuracy")


@dataclass
class LogSummary:
    """What a log says: its result blocks, the line indices of end signals, and the chosen result."""

    path: str
    blocks: list
    end_lines: list

    def final_result(self, kind: str):
        """The run's result block, or None when the run is unfinished.

        ``train``: the last block after the last end signal (a crashed run with only per-epoch
        val blocks gives None). ``eval``: the last block in the file.
        """
        if kind not in KINDS:
            raise ValueError(f"log kind {kind!r} is not one of {KINDS}")
        if kind == "train":
            if not self.end_lines:
                return None
            after = [b for b in self.blocks if b.line > self.end_lines[-1]]
            return after[-1] if after and after[-1].accuracy is not None else None
        good = [b for b in self.blocks if b.accuracy is not None]
        return good[-1] if good else None


def _to_number(text: str) -> float:
    return float(text.replace(",", ""))


def parse_lines(lines, path: str = "<lines>") -> LogSummary:
    """Parse an iterable of log lines (stripped before matching) into a :class:`LogSummary`."""
    blocks, ends = [], []
    current = None
    for i, raw in enumerate(lines):
        line = raw.strip()
        if line in END_SIGNALS:
            ends.append(i)
            current = None
            continue
        if line == RESULT_HEADER:
            current = ResultBlock(line=i)
            blocks.append(current)
            continue
        if current is None:
            continue
        m = _ITEM.match(line)
        if m:
            name = m.group(1).strip()
            current.metrics[name] = _to_number(m.group(2))
        elif line:
            current = None  # the block ends at the first line that is not a "* key: value" item
    return LogSummary(path=path, blocks=blocks, end_lines=ends)


def parse_log(path: str) -> LogSummary:
    """Parse one log file (undecodable bytes are replaced, never fatal)."""
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        return parse_lines(f, path=path)


def log_files(run_dir: str) -> list:
    """``log.txt`` first, then Dassl's ``log.txt-<timestamp>`` rerun logs in time order."""
    files = []
    main = os.path.join(run_dir, "log.txt")
    if os.path.isfile(main):
        files.append(main)
    files.extend(sorted(p for p in glob.glob(os.path.join(glob.escape(run_dir), "log.txt-*"))
                        if os.path.isfile(p)))
    return files


def read_run_result(run_dir: str, kind: str):
    """``(ResultBlock, log_path)`` of the newest log in ``run_dir`` holding a final result, else ``(None, None)``."""
    for path in reversed(log_files(run_dir)):
        block = parse_log(path).final_result(kind)
        if block is not None:
            return block, path
    return None, None


def run_status(run_dir: str, kind: str) -> str:
    """``finished`` (a final result exists), ``partial`` (folder exists, no result) or ``absent``."""
    if not os.path.isdir(run_dir):
        return "absent"
    block, _ = read_run_result(run_dir, kind)
    return "finished" if block is not None else "partial"


RANDOM_WEIGHTS_MARK = "RANDOM WEIGHTS: CLIP backbone"  # engine.backbone.loader, MODEL.BACKBONE.RANDOM_INIT
_EPOCH_LINE = re.compile(r"\bepoch \[\d+/(\d+)\]")
_SAVED_EPOCH = re.compile(r"model\.pth\.tar-(\d+)\b")
_LOADED_EPOCH = re.compile(r"^Loading weights to .*\(epoch = (\d+)")


@dataclass
class RunFacts:
    """What a run's log says about how it ran: random backbone weights, and its epochs (training:
    ``OPTIM.MAX_EPOCH`` from ``epoch [e/E]`` lines or the last saved checkpoint; evaluation: the
    loaded checkpoint's epoch; None when the log does not say, e.g. zero-shot runs)."""

    random_weights: bool = False
    epochs: int | None = None


def run_facts(path: str, result_line: int) -> RunFacts:
    """:class:`RunFacts` of the run in ``path`` that printed the result block at ``result_line``:
    only the lines of that run count (our logs append re-runs after a ``new run`` separator)."""
    from engine.utils.logger import SEPARATOR_MARK

    with open(path, "r", encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    start, end = 0, len(lines)
    for i, line in enumerate(lines):
        if line.startswith(SEPARATOR_MARK):
            if i <= result_line:
                start = i
            else:
                end = i
                break
    facts = RunFacts()
    planned, saved, loaded = None, None, None
    for line in lines[start:end]:
        if RANDOM_WEIGHTS_MARK in line:
            facts.random_weights = True
        m = _EPOCH_LINE.search(line)
        if m:
            planned = int(m.group(1))
        if line.startswith("Checkpoint saved to"):
            m = _SAVED_EPOCH.search(line)
            saved = int(m.group(1)) if m else saved
        m = _LOADED_EPOCH.match(line.strip())
        if m:
            loaded = int(m.group(1))
    facts.epochs = planned if planned is not None else (saved if saved is not None else loaded)
    return facts


def scan_metric(lines, keyword: str, end_signals) -> float | None:
    """``parse_test_res.py`` rule: after a line equal to one of ``end_signals``, every
    ``* <keyword>: X%`` overwrites the value; returns the last one (None if nothing matched)."""
    pattern = re.compile(r"\* " + re.escape(keyword) + r": ([\.\deE+-]+)%")
    armed, value = False, None
    for raw in lines:
        line = raw.strip()
        if line in end_signals:
            armed = True
        if not armed:
            continue
        m = pattern.search(line)
        if m:
            try:
                value = float(m.group(1))
            except ValueError:
                continue
    return value
