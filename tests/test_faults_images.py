"""Fault injection: corrupt images (truncated PNG/JPEG, a text file named ``.jpg``, a zero-byte image).

They are found before training by ``DATALOADER.CHECK_IMAGES header`` (cached), reported in one line
naming the file and what is wrong, or skipped and counted with ``DATALOADER.SKIP_BAD_IMAGES True``.
"""
import io
import json
import os
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

import train
from engine.data.base_dataset import DatasetError
from engine.data.data_manager import DataManager
from engine.data.image_check import BadImageError
from engine.data.image_scan import CACHE_FILE, probe_image, scan_images
from tests.fixtures_data import make_cfg, make_shapes

TINY = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
        "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "2", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
        "DATALOADER.TEST.BATCH_SIZE", "4", "OPTIM.MAX_EPOCH", "1"]


def _image_bytes(fmt, size=(40, 30)):
    img = Image.new("RGB", size)
    for x in range(size[0]):  # some detail, so that the compressed data is not tiny
        for y in range(size[1]):
            img.putpixel((x, y), ((x * 7) % 256, (y * 13) % 256, (x * y) % 256))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


CORRUPTIONS = {
    # name: (suffix, bytes, expected reason)
    "truncated_png": (".png", lambda: _image_bytes("PNG")[:-300], "truncated PNG"),
    "truncated_jpeg": (".jpg", lambda: _image_bytes("JPEG")[: len(_image_bytes("JPEG")) // 2], "truncated JPEG"),
    "text_as_jpg": (".jpg", lambda: b"<html>404 not found</html>\n", "not an image (unrecognised format"),
    "zero_byte": (".jpg", lambda: b"", "zero-byte file"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_probe_finds_each_corruption(tmp_path, kind):
    suffix, data, reason = CORRUPTIONS[kind]
    path = tmp_path / f"x{suffix}"
    path.write_bytes(data())
    assert reason in probe_image(str(path), "header")
    assert probe_image(str(path), "decode")  # the full decode agrees


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
def test_probe_passes_valid_images_also_with_trailing_bytes(tmp_path, fmt):
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(_image_bytes(fmt))
    assert probe_image(str(path), "header") is None and probe_image(str(path), "decode") is None
    if fmt in ("PNG", "JPEG"):  # no end marker in the last bytes: decoded fully, still valid
        path.write_bytes(_image_bytes(fmt) + b"\0" * 2048)
        assert probe_image(str(path), "header") is None


@pytest.fixture
def shapes_root(tmp_path):
    make_shapes(tmp_path, classes=("circle", "square"), counts={"train": 4, "val": 1, "test": 2}, size=32)
    return tmp_path


def _cfg(root, **opts):
    return make_cfg(str(root), "Shapes", DATASET__NUM_SHOTS=2, SEED=1, DATALOADER__NUM_WORKERS=0,
                    DATALOADER__TEST__BATCH_SIZE=4, **opts)


def _test_image(root, cls="square", i=5):
    return root / "shapes" / "images" / cls / f"{cls}_{i:03d}.png"


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_data_manager_stops_before_training(shapes_root, kind):
    _, data, reason = CORRUPTIONS[kind]
    bad = _test_image(shapes_root)
    bad.write_bytes(data())
    with pytest.raises(DatasetError) as e:
        DataManager(_cfg(shapes_root))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("Shapes: 1 of ") and f"images cannot be read, first: {bad} ({reason}" in msg
    assert "DATALOADER.SKIP_BAD_IMAGES True to skip and count them" in msg


def test_skip_bad_images_warns_once_then_skips_and_counts(shapes_root, capsys):
    bad = _test_image(shapes_root)
    bad.write_bytes(b"")
    dm = DataManager(_cfg(shapes_root, DATALOADER__SKIP_BAD_IMAGES=True))
    out = capsys.readouterr().out
    assert ("images cannot be read and will be skipped and counted (DATALOADER.SKIP_BAD_IMAGES True), "
            f"first: {bad} (zero-byte file)") in out
    paths = [p for b in dm.test_loader for p in b["impath"]]
    assert len(paths) == 3 and str(bad) not in paths
    assert "skipped unreadable image (1 so far)" in capsys.readouterr().out


def test_cache_makes_the_second_check_free_and_sees_changes(shapes_root, capsys):
    DataManager(_cfg(shapes_root))
    cache = shapes_root / "shapes" / CACHE_FILE
    assert cache.is_file()
    assert "(header; 0 unchanged since the last check)" in capsys.readouterr().out
    DataManager(_cfg(shapes_root))
    out = capsys.readouterr().out
    n = int(out.split("Checked ")[1].split(" images")[0])
    assert f"(header; {n} unchanged since the last check)" in out and n == 2 * 2 + 2 * 1 + 2 * 2
    bad = _test_image(shapes_root)
    bad.write_bytes(bad.read_bytes()[:-100])  # changed after being cached
    with pytest.raises(DatasetError, match="truncated PNG"):
        DataManager(_cfg(shapes_root))


def test_cache_falls_back_to_output_dir_and_ignores_foreign_caches(shapes_root, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    cache = shapes_root / "shapes" / CACHE_FILE
    cache.write_bytes(pickle.dumps(Payload()))
    DataManager(_cfg(shapes_root))
    assert "Ignoring the image-check cache" in capsys.readouterr().out and not marker.exists()
    assert cache.read_bytes().startswith(b"{")  # rewritten as JSON
    import engine.data.image_scan as scan
    monkeypatch.setattr(scan, "_writable_dir", lambda path: False)  # a read-only dataset folder
    out = tmp_path / "out"
    DataManager(_cfg(shapes_root, OUTPUT_DIR=str(out)))
    assert (out / CACHE_FILE).is_file()


def test_exists_mode_checks_existence_only(shapes_root):
    _test_image(shapes_root).write_bytes(b"")
    DataManager(_cfg(shapes_root, DATALOADER__CHECK_IMAGES="exists"))
    with pytest.raises(ValueError, match="DATALOADER.CHECK_IMAGES must be one of"):
        DataManager(_cfg(shapes_root, DATALOADER__CHECK_IMAGES="full"))


def test_scan_reports_every_bad_file_in_order(tmp_path):
    paths = []
    for i, kind in enumerate(["zero_byte", None, "text_as_jpg", None, "truncated_png"]):
        p = tmp_path / f"{i}.png"
        p.write_bytes(CORRUPTIONS[kind][1]() if kind else _image_bytes("PNG"))
        paths.append(str(p))
    bad, cached = scan_images(paths, "header", None)
    assert [p for p, _ in bad] == [paths[0], paths[2], paths[4]] and cached == 0


def test_worker_error_is_one_line():
    """A ``BadImageError`` re-raised by a loader worker keeps one line (torch folds the traceback in)."""
    from torch._utils import ExceptionWrapper

    try:
        raise BadImageError("cannot read image /d/a.jpg: image file is truncated")
    except BadImageError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(BadImageError) as e:
        wrapped.reraise()
    assert str(e.value) == "cannot read image /d/a.jpg: image file is truncated"
    assert isinstance(e.value, ValueError)  # printed by train.py as one `error:` line


def test_train_py_corrupt_image_stops_before_training(shapes_root, tmp_path, capsys):
    bad = _test_image(shapes_root, "circle", 6)
    bad.write_bytes(b"GIF89a not really")
    out = tmp_path / "out"
    args = ["--root", str(shapes_root), "--seed", "1", "--trainer", "CoOp", "--output-dir", str(out),
            "--dataset-config-file", "configs/datasets/shapes.yaml",
            "--config-file", "configs/trainers/CoOp/vit_b16_ctxv1.yaml", *TINY]
    capsys.readouterr()
    rc = train.main(args)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: Shapes: 1 of 10 images cannot be read, first: " + str(bad))
    log = open(out / "log.txt", encoding="utf-8").read()
    assert "epoch [1/1]" not in log and not (out / "prompt_learner").exists()
    rc = train.main(args + ["DATALOADER.SKIP_BAD_IMAGES", "True"])
    assert rc == 0
    log = open(out / "log.txt", encoding="utf-8").read()
    assert "skipped unreadable image (1 so far)" in log and "* total: 3" in log
    shutil.rmtree(out)


def test_train_py_image_broken_after_the_check_is_one_line(shapes_root, tmp_path, capsys):
    """With the existence-only check the loader meets the bad file: still one line naming it."""
    bad = _test_image(shapes_root)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    args = ["--root", str(shapes_root), "--seed", "1", "--trainer", "CoOp", "--output-dir", str(tmp_path / "o"),
            "--dataset-config-file", "configs/datasets/shapes.yaml", "--eval-only",
            "--config-file", "configs/trainers/CoOp/vit_b16_ctxv1.yaml", *TINY, "DATALOADER.CHECK_IMAGES", "exists"]
    capsys.readouterr()
    rc = train.main(args)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: cannot read image {bad}: ")


# ---------------------------------------------------------------------------------- image modes
def _png16_rgb(values):
    """A 16-bit-per-channel RGB PNG (``values``: uint16 array H x W x 3), written by hand (PIL cannot)."""
    import struct
    import zlib

    h, w, _ = values.shape
    raw = b"".join(b"\0" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _tiff16_rgb(values):
    """An uncompressed 16-bit-per-channel RGB TIFF (little-endian), written by hand."""
    import struct

    h, w, c = values.shape
    data = values.astype("<u2").tobytes()
    ifd = 8 + len(data)
    n = 10
    bps_at = ifd + 2 + n * 12 + 4
    short = lambda tag, v: struct.pack("<HHIHH", tag, 3, 1, v, 0)  # noqa: E731
    entries = [short(256, w), short(257, h), struct.pack("<HHII", 258, 3, c, bps_at), short(259, 1),
               short(262, 2), struct.pack("<HHII", 273, 4, 1, 8), short(277, c), short(278, h),
               struct.pack("<HHII", 279, 4, 1, len(data)), short(284, 1)]
    return (b"II*\x00" + struct.pack("<I", ifd) + data + struct.pack("<H", n) + b"".join(entries)
            + struct.pack("<I", 0) + struct.pack("<HHH", 16, 16, 16))


RAMP16 = np.array([[0, 256, 1000, 30000, 40000, 65535]], dtype=np.uint16)
RAMP16_8BIT = [0, 1, 3, 117, 156, 255]  # v >> 8: the full 16-bit range, not clipped at 255


def _mode_cases():
    """name -> (file bytes or PIL image saved as PNG/TIFF, expected RGB of the first row)."""
    rgb = np.array([[[200, 10, 30], [0, 128, 255]]], dtype=np.uint8)
    cases = {}
    cases["1"] = (Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1"), [[0] * 3, [255] * 3])
    cases["L"] = (Image.fromarray(np.array([[7, 250]], np.uint8)), [[7] * 3, [250] * 3])
    cases["LA"] = (Image.fromarray(np.array([[[7, 0], [250, 128]]], np.uint8), "LA"), [[7] * 3, [250] * 3])
    p = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=2)
    cases["P"] = (p, np.asarray(p.convert("RGB"))[0].tolist())
    pa = Image.new("PA", (2, 1))
    pa.putpalette([200, 10, 30, 0, 128, 255])
    pa.putdata([(0, 255), (1, 0)])
    cases["PA"] = (pa, [[200, 10, 30], [0, 128, 255]])
    rgba = Image.fromarray(np.concatenate([rgb, np.array([[[255], [0]]], np.uint8)], axis=2), "RGBA")
    cases["RGBA"] = (rgba, rgb[0].tolist())  # alpha dropped, as Dassl's read_image does
    cmyk = Image.new("CMYK", (2, 1))
    cmyk.putdata([(0, 0, 0, 0), (255, 0, 255, 0)])  # white; cyan + yellow = green
    cases["CMYK"] = (cmyk, [[255, 255, 255], [0, 255, 0]])
    cases["I;16"] = (Image.fromarray(RAMP16), [[v] * 3 for v in RAMP16_8BIT])
    cases["I"] = (Image.fromarray(RAMP16.astype(np.int32)), [[v] * 3 for v in RAMP16_8BIT])
    cases["F"] = (Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)), [[0] * 3, [128] * 3, [255] * 3])
    ramp = np.stack([RAMP16[0], RAMP16[0][::-1], np.full(6, 65535, np.uint16)], axis=1)[None]
    expected = np.stack([RAMP16_8BIT, RAMP16_8BIT[::-1], [255] * 6], axis=1).tolist()
    cases["RGB-16bit-TIFF"] = (_tiff16_rgb(ramp), expected)
    cases["RGB-16bit-PNG"] = (_png16_rgb(ramp), expected)
    return cases


MODE_CASES = _mode_cases()


@pytest.mark.parametrize("name", sorted(MODE_CASES))
def test_every_mode_is_read_with_its_real_range(tmp_path, name):
    """The loader's reader, the image check (header and decode) and predict's reader agree per mode."""
    from engine.data.image_check import read_image

    source, expected = MODE_CASES[name]
    if isinstance(source, bytes):
        path = tmp_path / ("x.tif" if "TIFF" in name else "x.png")
        path.write_bytes(source)
    else:
        path = tmp_path / ("x.tif" if source.mode in ("I", "F", "CMYK", "PA") else "x.png")
        source.save(path)
        with Image.open(path) as img:  # the file holds the mode under test
            assert img.mode == name or (name == "I;16" and img.mode.startswith("I;16"))
    image = read_image(str(path))
    assert image.mode == "RGB"
    assert np.asarray(image)[0].tolist() == expected
    assert probe_image(str(path), "header") is None and probe_image(str(path), "decode") is None


def test_sixteen_bit_png_is_not_read_as_white(tmp_path):
    """The silent failure: a dark 16-bit PNG (values 1000..4000 of 65535) came out all white (255)."""
    from engine.data.image_check import read_image

    dark = np.linspace(1000, 4000, 32 * 32).astype(np.uint16).reshape(32, 32)
    Image.fromarray(dark).save(tmp_path / "scan.png")
    pixels = np.asarray(read_image(str(tmp_path / "scan.png")))
    assert pixels.max() == 4000 >> 8 and pixels.min() == 1000 >> 8 and len(np.unique(pixels)) > 5


@pytest.mark.parametrize("case", ["I-out-of-range", "F-out-of-range", "F-nan", "LAB"])
def test_modes_without_a_faithful_conversion_are_refused_in_one_line(tmp_path, case):
    from engine.data.image_check import read_image

    path = tmp_path / "x.tif"
    if case == "I-out-of-range":
        Image.fromarray(np.array([[-5, 70000]], np.int32)).save(path)
        reason = "32-bit integer image (mode I) with values -5..70000, outside the 16-bit range 0..65535"
    elif case.startswith("F"):
        value = np.nan if case == "F-nan" else 255.0
        Image.fromarray(np.array([[0.0, value]], np.float32)).save(path)
        reason = ("non-finite values" if case == "F-nan"
                  else "32-bit float image (mode F) with values 0..255, outside 0..1")
    else:
        Image.new("LAB", (2, 2)).save(path)
        reason = "unsupported image mode LAB (convert it to 8-bit RGB or greyscale)"
    assert reason in probe_image(str(path), "header")  # the check before training refuses it
    with pytest.raises(BadImageError) as e:
        read_image(str(path))
    assert str(e.value).startswith(f"cannot read image {path}: ") and reason in str(e.value)
    assert "\n" not in str(e.value)


def test_sixteen_bit_dataset_trains_and_an_unsupported_mode_stops_before_training(shapes_root, tmp_path, capsys):
    """Through ``train.py``: 16-bit PNGs in the dataset are read; an LAB TIFF is named before training."""
    gray = np.asarray(Image.open(_test_image(shapes_root)).convert("L")).astype(np.uint16) * 257
    Image.fromarray(gray).save(_test_image(shapes_root))  # same picture, 16 bits
    args = ["--root", str(shapes_root), "--seed", "1", "--trainer", "CoOp", "--output-dir", str(tmp_path / "o"),
            "--dataset-config-file", "configs/datasets/shapes.yaml", "--eval-only",
            "--config-file", "configs/trainers/CoOp/vit_b16_ctxv1.yaml", *TINY]
    assert train.main(args) == 0
    bad = _test_image(shapes_root, "circle", 6)
    Image.new("LAB", (32, 32)).save(bad, format="TIFF")
    capsys.readouterr()
    args[args.index("--output-dir") + 1] = str(tmp_path / "o2")
    assert train.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"first: {bad} (unsupported image mode LAB" in err


def test_cache_of_the_version_before_the_mode_check_is_checked_again(shapes_root, capsys):
    """An image cached as fine before modes were checked (here a 32-bit float TIFF out of range, named
    .png) is refused by the next check, not waved through by the old cache."""
    DataManager(_cfg(shapes_root))
    cache = shapes_root / "shapes" / CACHE_FILE
    bad = _test_image(shapes_root)
    Image.fromarray(np.array([[0.0, 255.0]], np.float32)).save(bad, format="TIFF")
    data = json.loads(cache.read_text())
    stat = os.stat(bad)
    data["version"] = 1
    data["files"][os.path.relpath(str(bad), str(cache.parent))] = [stat.st_size, stat.st_mtime_ns, 1]
    cache.write_text(json.dumps(data))
    capsys.readouterr()
    with pytest.raises(DatasetError, match=r"32-bit float image \(mode F\) with values 0\.\.255"):
        DataManager(_cfg(shapes_root))
    assert "predates the image-mode check; every image is checked once more" in capsys.readouterr().out
