"""Synthetic dataset trees in each benchmark's exact on-disk layout (compat note §2.1), for tests.

Each ``make_<dataset>(root)`` writes ``<root>/<dataset folder>/...`` with a few classes of tiny images
plus the raw annotation files CoOp reads (no split JSON unless stated), and returns a dict with the
expected ``classnames`` (sorted by label) and, where fixed, ``sizes`` (train, val, test). Reusable by
other areas: ``make_cfg`` builds a mutable default config, ``write_image`` writes a tiny image.
"""
import json
import os

from PIL import Image

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared")
COOP_SPLITS = os.path.normpath(os.path.join(SHARED, "data", "coop_splits"))
GOLDEN_PETS = os.path.normpath(os.path.join(SHARED, "data", "golden", "fewshot_OxfordPets.json"))


def make_cfg(root="", name="", **opts):
    """Mutable default config (engine defaults, which already hold DATASET.SUBSAMPLE_CLASSES) with
    ``DATASET.ROOT/NAME`` set, ``NUM_WORKERS 0``, ``DATASET.ALLOW_GENERATED_SPLIT True``, and ``opts``
    given as ``SECTION__KEY=value``."""
    from engine.config import get_cfg_default
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.USE_CUDA = False
    cfg.DATASET.ALLOW_GENERATED_SPLIT = True  # the synthetic trees carry no split file unless stated
    for key, value in opts.items():
        node = cfg
        parts = key.split("__")
        for p in parts[:-1]:
            node = getattr(node, p)
        setattr(node, parts[-1], value)
    return cfg


def write_image(path, colour=(200, 30, 30), size=(12, 10)):
    """A tiny solid-colour image; format from the extension (JPEG for .jpg/.jpeg)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, tuple(colour)).save(path)


def _colour(i):
    return ((37 * i) % 256, (91 * i) % 256, (53 * i + 80) % 256)


def _lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))


def _class_folders(image_dir, folders, n, ext=".jpg"):
    for c, folder in enumerate(folders):
        for i in range(n):
            write_image(os.path.join(image_dir, folder, f"{folder.lower()}_{i:04d}{ext}"), _colour(c * 10 + i))


# ---- datasets whose missing split is generated from class folders (50/20/30 with round) ----
def make_dtd(root, n=5):
    _class_folders(os.path.join(root, "dtd", "images"), ["banded", "blotchy", "zigzagged"], n)
    return {"classnames": ["banded", "blotchy", "zigzagged"], "sizes": (6, 3, 6)}


def make_food101(root, n=5):
    _class_folders(os.path.join(root, "food-101", "images"), ["apple_pie", "baby_back_ribs", "sushi"], n)
    return {"classnames": ["apple_pie", "baby_back_ribs", "sushi"], "sizes": (6, 3, 6)}


def make_eurosat(root, n=5):
    _class_folders(os.path.join(root, "eurosat", "2750"), ["AnnualCrop", "Forest", "SeaLake"], n)
    return {"classnames": ["Annual Crop Land", "Forest", "Sea or Lake"], "sizes": (6, 3, 6)}


def make_caltech101(root, n=5):
    folders = ["BACKGROUND_Google", "Faces", "Faces_easy", "accordion", "airplanes"]
    _class_folders(os.path.join(root, "caltech-101", "101_ObjectCategories"), folders, n)
    return {"classnames": ["face", "accordion", "airplane"], "sizes": (6, 3, 6)}


# ---- datasets with official train(val)/test lists ----
PETS = [("Abyssinian", 1), ("american_bulldog", 2), ("great_pyrenees", 3)]


def make_oxford_pets(root, n_trainval=5, n_test=2):
    d = os.path.join(root, "oxford_pets")
    trainval, test = [], []
    for breed, cid in PETS:
        for i in range(1, n_trainval + n_test + 1):
            write_image(os.path.join(d, "images", f"{breed}_{i}.jpg"), _colour(cid * 10 + i))
            (trainval if i <= n_trainval else test).append(f"{breed}_{i} {cid} 1 1")
    _lines(os.path.join(d, "annotations", "trainval.txt"), trainval)
    _lines(os.path.join(d, "annotations", "test.txt"), test)
    return {"classnames": ["abyssinian", "american_bulldog", "great_pyrenees"], "sizes": (12, 3, 6)}


def make_fgvc_aircraft(root):
    d = os.path.join(root, "fgvc_aircraft")
    variants = ["707-320", "A300B4", "Cessna 172"]
    _lines(os.path.join(d, "variants.txt"), variants)
    counts = {"train": 2, "val": 2, "test": 1}
    img_id = 1000000
    for split, k in counts.items():
        lines = []
        for c, v in enumerate(variants):
            for _ in range(k):
                img_id += 1
                write_image(os.path.join(d, "images", f"{img_id}.jpg"), _colour(img_id % 97))
                lines.append(f"{img_id} {v}")
        _lines(os.path.join(d, f"images_variant_{split}.txt"), lines)
    return {"classnames": variants, "sizes": (6, 6, 3)}


def make_sun397(root, n_train=5, n_test=2):
    d = os.path.join(root, "sun397")
    classes = ["/a/abbey", "/a/apartment_building/outdoor", "/b/bakery/shop"]
    _lines(os.path.join(d, "ClassName.txt"), classes)
    train, test = [], []
    for c, cls in enumerate(classes):
        for i in range(n_train + n_test):
            rel = f"{cls}/sun_{c}{i:03d}.jpg"
            write_image(os.path.join(d, "SUN397", rel.lstrip("/")), _colour(c * 10 + i))
            (train if i < n_train else test).append(rel)
    _lines(os.path.join(d, "Training_01.txt"), train)
    _lines(os.path.join(d, "Testing_01.txt"), test)
    return {"classnames": ["abbey", "outdoor apartment_building", "shop bakery"], "sizes": (12, 3, 6)}


def make_ucf101(root, n_train=5, n_test=2):
    d = os.path.join(root, "ucf101")
    actions = ["ApplyEyeMakeup", "Basketball", "YoYo"]
    _lines(os.path.join(d, "ucfTrainTestlist", "classInd.txt"), [f"{i + 1} {a}" for i, a in enumerate(actions)])
    train, test = [], []
    for c, a in enumerate(actions):
        renamed = "_".join(__import__("re").findall("[A-Z][^A-Z]*", a))
        for i in range(n_train + n_test):
            video = f"v_{a}_g{i:02d}_c01"
            write_image(os.path.join(d, "UCF-101-midframes", renamed, video + ".jpg"), _colour(c * 10 + i))
            if i < n_train:
                train.append(f"{a}/{video}.avi {c + 1}")
            else:
                test.append(f"{a}/{video}.avi")
    _lines(os.path.join(d, "ucfTrainTestlist", "trainlist01.txt"), train)
    _lines(os.path.join(d, "ucfTrainTestlist", "testlist01.txt"), test)
    return {"classnames": ["Apply_Eye_Makeup", "Basketball", "Yo_Yo"], "sizes": (12, 3, 6)}


def make_oxford_flowers(root, n=5):
    import numpy as np
    from scipy.io import savemat
    d = os.path.join(root, "oxford_flowers")
    labels = [1 + (i % 3) for i in range(3 * n)]  # interleaved, like the real file
    for i in range(len(labels)):
        write_image(os.path.join(d, "jpg", f"image_{i + 1:05d}.jpg"), _colour(i))
    savemat(os.path.join(d, "imagelabels.mat"), {"labels": np.array([labels], dtype=np.uint8)})
    with open(os.path.join(d, "cat_to_name.json"), "w") as f:
        json.dump({"1": "pink primrose", "2": "hard-leaved pocket orchid", "3": "canterbury bells"}, f)
    return {"classnames": ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"], "sizes": (6, 3, 6)}


def make_stanford_cars(root, n_train=5, n_test=2):
    import numpy as np
    from scipy.io import savemat
    d = os.path.join(root, "stanford_cars")
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Tesla Model S Sedan 2012"]
    meta = np.empty((1, len(names)), dtype=object)
    for i, n in enumerate(names):
        meta[0, i] = n

    def annos(folder, k, start):
        arr = np.zeros((1, k * len(names)), dtype=[("fname", "O"), ("class", "O")])
        j = 0
        for c in range(len(names)):
            for i in range(k):
                fname = f"{start + j:05d}.jpg"
                write_image(os.path.join(d, folder, fname), _colour(start + j))
                arr[0, j]["fname"] = fname
                arr[0, j]["class"] = np.array([[c + 1]], dtype=np.uint8)
                j += 1
        return arr

    os.makedirs(os.path.join(d, "devkit"), exist_ok=True)
    savemat(os.path.join(d, "devkit", "cars_meta.mat"), {"class_names": meta})
    savemat(os.path.join(d, "devkit", "cars_train_annos.mat"), {"annotations": annos("cars_train", n_train, 1)})
    savemat(os.path.join(d, "cars_test_annos_withlabels.mat"), {"annotations": annos("cars_test", n_test, 1)})
    return {"classnames": ["2000 AM General Hummer SUV", "2012 Acura RL Sedan", "2012 Tesla Model S Sedan"],
            "sizes": (12, 3, 6)}


# ---- ImageNet and its four test-only variants ----
WNIDS = [("n01440764", "tench"), ("n01443537", "goldfish"), ("n01484850", "great white shark"),
         ("n01491361", "tiger shark")]


def _classnames_file(d, wnids=WNIDS):
    _lines(os.path.join(d, "classnames.txt"), [f"{w} {n}" for w, n in wnids])


def make_imagenet(root, n_train=4, n_val=2):
    d = os.path.join(root, "imagenet")
    _classnames_file(d)
    # reverse-sorted creation order: the dataset must still list sorted
    for c, (wnid, _) in reversed(list(enumerate(WNIDS))):
        for i in reversed(range(n_train)):
            write_image(os.path.join(d, "images", "train", wnid, f"{wnid}_{i}.JPEG"), _colour(c * 10 + i))
        for i in reversed(range(n_val)):
            write_image(os.path.join(d, "images", "val", wnid, f"ILSVRC2012_val_{c}{i:07d}.JPEG"), _colour(c))
    return {"classnames": [n for _, n in WNIDS], "sizes": (4 * n_train, 4 * n_val, 4 * n_val)}


def make_imagenetv2(root, n=2):
    d = os.path.join(root, "imagenetv2")
    _classnames_file(d)
    for c in range(len(WNIDS)):
        for i in range(n):
            write_image(os.path.join(d, "imagenetv2-matched-frequency-format-val", str(c), f"{i}.jpeg"), _colour(c))
    return {"classnames": [n for _, n in WNIDS], "sizes": (4 * n, 0, 4 * n)}


def make_imagenet_sketch(root, n=2):
    d = os.path.join(root, "imagenet-sketch")
    _classnames_file(d)
    for c, (wnid, _) in enumerate(WNIDS):
        for i in range(n):
            write_image(os.path.join(d, "images", wnid, f"sketch_{i}.JPEG"), _colour(c))
    return {"classnames": [n for _, n in WNIDS], "sizes": (4 * n, 0, 4 * n)}


def _subset_variant(root, folder, image_subdir, n=2):
    d = os.path.join(root, folder)
    _classnames_file(d)
    subset = [WNIDS[3], WNIDS[1]]  # 2 of the 4 classes, created out of order
    for c, (wnid, _) in enumerate(subset):
        for i in range(n):
            write_image(os.path.join(d, image_subdir, wnid, f"{i}.jpg"), _colour(c))
    _lines(os.path.join(d, image_subdir, "README.txt"), ["ignored"])
    return {"classnames": ["goldfish", "tiger shark"], "sizes": (2 * n, 0, 2 * n)}


def make_imagenet_a(root, n=2):
    return _subset_variant(root, "imagenet-adversarial", "imagenet-a", n)


def make_imagenet_r(root, n=2):
    return _subset_variant(root, "imagenet-rendition", "imagenet-r", n)


# DATASET.NAME -> (builder, dataset folder, split file or None)
LAYOUTS = {
    "DescribableTextures": (make_dtd, "dtd", "split_zhou_DescribableTextures.json"),
    "Food101": (make_food101, "food-101", "split_zhou_Food101.json"),
    "EuroSAT": (make_eurosat, "eurosat", "split_zhou_EuroSAT.json"),
    "Caltech101": (make_caltech101, "caltech-101", "split_zhou_Caltech101.json"),
    "OxfordPets": (make_oxford_pets, "oxford_pets", "split_zhou_OxfordPets.json"),
    "FGVCAircraft": (make_fgvc_aircraft, "fgvc_aircraft", None),
    "SUN397": (make_sun397, "sun397", "split_zhou_SUN397.json"),
    "UCF101": (make_ucf101, "ucf101", "split_zhou_UCF101.json"),
    "OxfordFlowers": (make_oxford_flowers, "oxford_flowers", "split_zhou_OxfordFlowers.json"),
    "StanfordCars": (make_stanford_cars, "stanford_cars", "split_zhou_StanfordCars.json"),
    "ImageNet": (make_imagenet, "imagenet", None),
    "ImageNetV2": (make_imagenetv2, "imagenetv2", None),
    "ImageNetSketch": (make_imagenet_sketch, "imagenet-sketch", None),
    "ImageNetA": (make_imagenet_a, "imagenet-adversarial", None),
    "ImageNetR": (make_imagenet_r, "imagenet-rendition", None),
}


def make_shapes(root, classes=None, counts=None, size=224):
    """The Shapes demo tree under ``<root>/shapes`` (see demo/shapes.py); small ``counts``/``size``
    keep tests fast, e.g. ``make_shapes(root, counts={"train": 4, "val": 2, "test": 4}, size=32)``."""
    from demo.shapes_draw import SHAPE_NAMES
    from demo.shapes import ensure_shapes
    return ensure_shapes(str(root), classes=tuple(classes or SHAPE_NAMES), counts=counts, size=size)


def make_image_folder(root, classes=("cat", "dog", "red_fox"), n=5):
    """``<root>/<class>/*.png`` (plus a stray non-image file that must be ignored)."""
    _class_folders(str(root), list(classes), n, ext=".png")
    _lines(os.path.join(str(root), classes[0], "notes.txt"), ["not an image"])
    return {"classnames": list(classes)}


def make_csv(root, with_split=False, header=True, n=5):
    """``<root>/data.csv`` with ``path,label,classname[,split]`` rows over ``<root>/imgs``."""
    rows = ["path,label,classname" + (",split" if with_split else "")] if header else []
    for c, name in enumerate(["cat", "dog"]):
        for i in range(n):
            rel = f"imgs/{name}_{i}.png"
            write_image(os.path.join(str(root), rel), _colour(c * 10 + i))
            split = ",train" if i < 3 else (",val" if i == 3 else ",test")
            rows.append(f"{rel},{c},{name}" + (split if with_split else ""))
    path = os.path.join(str(root), "data.csv")
    _lines(path, rows)
    return path
