"""OxfordFlowers: ``oxford_flowers/jpg/``, ``split_zhou_OxfordFlowers.json`` (§2.1). A missing split is
generated from ``imagelabels.mat`` + ``cat_to_name.json`` (50/20/30 per class, scipy needed); class
name = ``cat_to_name[str(mat label)]``, label = mat label - 1 (§2.3)."""
import os
import random

from engine.data import DATASET_REGISTRY, Datum
from engine.data.base_dataset import DatasetError
from engine.data.split_dataset import SplitDataset
from engine.data.splits import SPLIT_SEED, load_json_file

from ._matfile import loadmat


@DATASET_REGISTRY.register()
class OxfordFlowers(SplitDataset):
    folder = "oxford_flowers"
    image_subdir = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    raw_files_hint = "oxford_flowers/imagelabels.mat and cat_to_name.json"

    def generate_split(self, p_trn=0.5, p_val=0.2):
        labels = loadmat(os.path.join(self.dataset_dir, "imagelabels.mat"))["labels"][0]
        lab2cname = load_json_file(os.path.join(self.dataset_dir, "cat_to_name.json"), "class-name file")
        tracker = {}
        for i, label in enumerate(labels):
            impath = os.path.join(self.image_dir, f"image_{i + 1:05d}.jpg")
            tracker.setdefault(int(label), []).append(impath)
        rng = random.Random(SPLIT_SEED)
        train, val, test = [], [], []
        for label, impaths in tracker.items():
            if str(label) not in lab2cname:
                raise DatasetError(f"cat_to_name.json has no name for label {label}")
            cname = lab2cname[str(label)]
            rng.shuffle(impaths)
            n_train, n_val = round(len(impaths) * p_trn), round(len(impaths) * p_val)
            if min(n_train, n_val, len(impaths) - n_train - n_val) <= 0:
                raise DatasetError(f"imagelabels.mat: label {label} has only {len(impaths)} images")
            make = lambda ps: [Datum(p, label - 1, 0, cname) for p in ps]  # noqa: E731
            train += make(impaths[:n_train])
            val += make(impaths[n_train:n_train + n_val])
            test += make(impaths[n_train + n_val:])
        return train, val, test
