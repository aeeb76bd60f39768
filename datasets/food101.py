"""Food101: ``food-101/images/<class>/``, ``split_zhou_Food101.json`` (§2.1); class name = folder name;
a missing split is generated from the class folders (50/20/30)."""
from engine.data import DATASET_REGISTRY
from engine.data.split_dataset import SplitDataset
from engine.data.splits import read_and_split_data


@DATASET_REGISTRY.register()
class Food101(SplitDataset):
    folder = "food-101"
    image_subdir = "images"
    split_file = "split_zhou_Food101.json"
    raw_files_hint = "the class folders food-101/images/<class>/"

    def generate_split(self):
        return read_and_split_data(self.image_dir)
