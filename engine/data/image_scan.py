"""Pre-training image check (``DATALOADER.CHECK_IMAGES``) with a cache, so that a corrupt image stops the
run before training rather than in the middle of an evaluation.

Modes (how much is verified of every distinct image of the few-shot train set, val and test):

- ``exists``: one ``stat`` per file (missing files only).
- ``header`` (default): the file is not empty, PIL recognises its header (``Image.open``, which reads
  the first bytes only), the size is positive, and the end of the file is there: a JPEG ends with its
  end-of-image marker ``FF D9`` (within the last 1 KiB), a PNG with its ``IEND`` chunk, a GIF with
  ``;``; other formats get PIL's ``verify()``. A file whose trailer is missing is then decoded fully,
  so a valid file with trailing bytes passes and a truncated one is reported. Reads a few KiB per file.
- ``decode``: every image is decoded fully (what the loader does; slowest).

Files that pass are cached in ``.image_check.json`` (path -> size, mtime in ns, mode) in the dataset
folder, or in ``OUTPUT_DIR`` when the dataset folder is not writable, written atomically; a later run
re-checks only files that are new or changed (same size and mtime = cached). Failures are never cached.
Unreadable files raise one ``DatasetError`` line naming the first ones and what is wrong, or, with
``DATALOADER.SKIP_BAD_IMAGES True``, one warning (the loader then skips and counts them).
"""
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from PIL import Image, UnidentifiedImageError

from engine.utils.io import atomic_write_text
from engine.utils.logger import get_logger

from .base_dataset import DatasetError
from .image_check import check_images_exist
from .image_modes import NEEDS_PIXELS, UnsupportedImage, mode_reason, to_rgb

MODES = ("exists", "header", "decode")
CACHE_FILE = ".image_check.json"
CACHE_VERSION = 2  # 2: image modes are checked too (engine.data.image_modes); older caches are re-checked
_LEVEL = {"header": 1, "decode": 2}
_TAIL = 1024
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_THREADS = 8


def _trailer_ok(fmt, tail):
    """True when the last bytes of a ``fmt`` file hold its end marker; None when the format has none."""
    if fmt == "JPEG" or fmt == "MPO":
        return b"\xff\xd9" in tail
    if fmt == "PNG":
        return tail.endswith(_PNG_IEND) or _PNG_IEND in tail
    if fmt == "GIF":
        return tail.rstrip(b"\x00").endswith(b";")
    return None


def _guess_format(head):
    for magic, name in ((b"\xff\xd8", "JPEG"), (b"\x89PNG", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
                        (b"RIFF", "WEBP")):
        if head.startswith(magic):
            return name
    return "image"


def _decode(path):
    with Image.open(path) as img:
        img.load()


def probe_image(path, mode="header"):
    """None when ``path`` passes ``mode`` (``header`` or ``decode``), else a short reason."""
    try:
        size = os.path.getsize(path)
    except OSError as e:
        return f"cannot stat ({e.strerror or e})"
    if size == 0:
        return "zero-byte file"
    try:
        with open(path, "rb") as f:
            head = f.read(16)
        with Image.open(path) as img:
            fmt = img.format
            if not img.width or not img.height:
                return f"{fmt} image of size {img.width}x{img.height}"
            unsupported = mode_reason(img.mode)
            if unsupported:
                return unsupported
            if mode == "decode" or img.mode in NEEDS_PIXELS:  # the range of I/F images is in their pixels
                to_rgb(img)
                return None
            with open(path, "rb") as f:
                f.seek(max(0, size - _TAIL))
                tail = f.read()
            ok = _trailer_ok(fmt, tail)
            if ok is None:
                img.verify()
                return None
        if not ok:  # missing end marker: truncated, or valid with trailing bytes; decode to tell
            try:
                _decode(path)
            except (OSError, ValueError, SyntaxError) as e:
                return f"truncated {fmt} ({size:,} bytes; {e})"
        return None
    except UnsupportedImage as e:
        return str(e)
    except UnidentifiedImageError:
        return f"not an image (unrecognised format; {size:,} bytes starting with {head[:8]!r})"
    except (OSError, ValueError, SyntaxError) as e:
        if "runcated" in str(e):
            return f"truncated {_guess_format(head)} ({size:,} bytes; {e})"
        return f"unreadable ({type(e).__name__}: {e})"
    except Exception as e:  # PIL plugins raise assorted errors on garbage
        return f"unreadable ({type(e).__name__}: {e})"


# ---------------------------------------------------------------------------------- cache
def _writable_dir(path):
    return bool(path) and os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def cache_path_for(dataset_dir, output_dir):
    """``<dataset_dir>/.image_check.json`` when writable, else ``<OUTPUT_DIR>/.image_check.json``, else None."""
    if _writable_dir(dataset_dir):
        return os.path.join(dataset_dir, CACHE_FILE)
    if output_dir:
        return os.path.join(output_dir, CACHE_FILE)
    return None


def _read_cache(path):
    """``{abs path: [size, mtime_ns, level]}``; an unreadable or foreign cache is ignored (never unpickled)."""
    if not path or not os.path.isfile(path):
        return {}
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
        if isinstance(data, dict) and data.get("version") == 1:
            get_logger().info(f"The image-check cache {path} predates the image-mode check; every image is "
                              "checked once more")
            return {}
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
            raise ValueError("unknown layout")
        base = os.path.dirname(os.path.abspath(path))
        files = data["files"]
        return {os.path.normpath(os.path.join(base, k)): v for k, v in files.items()
                if isinstance(v, list) and len(v) == 3 and all(isinstance(x, int) for x in v)}
    except (OSError, ValueError, KeyError, AttributeError, TypeError, UnicodeDecodeError) as e:
        get_logger().warning(f"Ignoring the image-check cache {path} ({type(e).__name__}); it will be rewritten")
        return {}


def _write_cache(path, entries):
    base = os.path.dirname(os.path.abspath(path))
    files = {}
    for p, v in sorted(entries.items()):
        rel = os.path.relpath(p, base)
        files[p if rel.startswith("..") else rel] = v
    try:
        atomic_write_text(path, json.dumps({"version": CACHE_VERSION, "files": files}, separators=(",", ":")))
    except OSError as e:  # the cache is an optimisation: never fail the run for it
        get_logger().warning(f"Could not write the image-check cache {path}: {e}")


def _stamp(path):
    st = os.stat(path)
    return [int(st.st_size), int(st.st_mtime_ns)]


# ---------------------------------------------------------------------------------- the check
def scan_images(paths, mode="header", cache_file=None, threads=_THREADS):
    """Check ``paths`` (distinct, existing); returns ``(bad [(path, reason)] in input order, n_cached)``."""
    level = _LEVEL[mode]
    cache = _read_cache(cache_file)
    todo, n_cached = [], 0
    stamps = {}
    for p in paths:
        key = os.path.normpath(os.path.abspath(p))
        try:
            stamps[p] = _stamp(p)
        except OSError:
            stamps[p] = None
        entry = cache.get(key)
        if entry is not None and stamps[p] is not None and entry[:2] == stamps[p] and entry[2] >= level:
            n_cached += 1
        else:
            todo.append(p)
    reasons = {}
    if todo:
        workers = max(1, min(threads, len(todo) // 64 + 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for p, reason in zip(todo, pool.map(lambda q: probe_image(q, mode), todo)):
                reasons[p] = reason
    bad = [(p, reasons[p]) for p in paths if reasons.get(p)]
    if cache_file and todo:
        new = {os.path.normpath(os.path.abspath(p)): stamps[p] + [level] for p in todo
               if not reasons.get(p) and stamps[p] is not None}
        if new:
            merged = _read_cache(cache_file)  # re-read: another run may have added entries meanwhile
            merged.update(new)
            _write_cache(cache_file, merged)
    return bad, n_cached


def check_images(cfg, dataset, name=None):
    """``DataManager``'s check before training (``DATALOADER.CHECK_IMAGES``; see the module docstring).

    Missing files: ``DatasetError`` (count + first 3). Unreadable files: ``DatasetError`` naming the first
    3 and what is wrong, or one warning with ``DATALOADER.SKIP_BAD_IMAGES True``. Returns the number of
    distinct images.
    """
    name = name or type(dataset).__name__
    sources = (dataset.train_x, dataset.val, dataset.test)
    n = check_images_exist(*sources, name=name)
    mode = str(cfg.DATALOADER.get("CHECK_IMAGES", "header"))
    if mode not in MODES:
        raise ValueError(f"DATALOADER.CHECK_IMAGES must be one of {MODES}, got {mode!r}")
    if mode == "exists":
        return n
    seen, paths = set(), []
    for source in sources:
        for item in source or ():
            if item.impath not in seen:
                seen.add(item.impath)
                paths.append(item.impath)
    cache_file = cache_path_for(getattr(dataset, "dataset_dir", ""), cfg.OUTPUT_DIR)
    start = time.time()
    bad, n_cached = scan_images(paths, mode, cache_file)
    logger = get_logger()
    logger.info(f"Checked {len(paths):,} images ({mode}; {n_cached:,} unchanged since the last check) "
                f"in {time.time() - start:.1f}s")
    if not bad:
        return n
    first = ", ".join(f"{p} ({reason})" for p, reason in bad[:3])
    if cfg.DATALOADER.SKIP_BAD_IMAGES:
        logger.warning(f"{name}: {len(bad)} of {len(paths)} images cannot be read and will be skipped and "
                       f"counted (DATALOADER.SKIP_BAD_IMAGES True), first: {first}")
        return n
    raise DatasetError(f"{name}: {len(bad)} of {len(paths)} images cannot be read, first: {first}; replace or "
                       "remove them, or set DATALOADER.SKIP_BAD_IMAGES True to skip and count them")
