"""StanfordCars: ``stanford_cars/cars_train/``, ``cars_test/``, ``split_zhou_StanfordCars.json`` whose
paths are relative to the DATASET folder (§2.2). A missing split is generated from
``devkit/cars_train_annos.mat``, ``devkit/cars_meta.mat`` and ``cars_test_annos_withlabels.mat``
(scipy needed); class name = meta name with the trailing year moved to the front (§2.3)."""
import os

from engine.data import DATASET_REGISTRY, Datum
from engine.data.base_dataset import DatasetError
from engine.data.split_dataset import SplitDataset
from engine.data.splits import split_trainval

from ._matfile import loadmat


def _str(x):
    """A MATLAB string cell (numpy array or str) as a Python str."""
    while hasattr(x, "shape") and getattr(x, "size", 0) == 1 and x.dtype == object:
        x = x.flat[0]
    if hasattr(x, "shape"):
        x = x.flat[0] if x.dtype.kind in "US" and x.size == 1 else x
    return str(x)


@DATASET_REGISTRY.register()
class StanfordCars(SplitDataset):
    folder = "stanford_cars"
    image_subdir = ""
    split_file = "split_zhou_StanfordCars.json"
    prefix_is_dataset_dir = True
    raw_files_hint = ("stanford_cars/devkit/cars_train_annos.mat, devkit/cars_meta.mat "
                      "and cars_test_annos_withlabels.mat")

    def read_data(self, image_subdir, anno_file, meta_file):
        annos = loadmat(anno_file)["annotations"][0]
        names = loadmat(meta_file)["class_names"][0]
        items = []
        for anno in annos:
            imname = _str(anno["fname"])
            label = int(anno["class"].flat[0]) - 1
            if not 0 <= label < len(names):
                raise DatasetError(f"{anno_file}: class {label + 1} of {imname} is not in {meta_file}")
            words = _str(names[label]).split(" ")
            words.insert(0, words.pop(-1))
            items.append(Datum(os.path.join(self.dataset_dir, image_subdir, imname), label, 0, " ".join(words)))
        return items

    def generate_split(self):
        meta = os.path.join(self.dataset_dir, "devkit", "cars_meta.mat")
        trainval = self.read_data("cars_train", os.path.join(self.dataset_dir, "devkit", "cars_train_annos.mat"), meta)
        test = self.read_data("cars_test", os.path.join(self.dataset_dir, "cars_test_annos_withlabels.mat"), meta)
        train, val = split_trainval(trainval, source="devkit/cars_train_annos.mat")
        return train, val, test
