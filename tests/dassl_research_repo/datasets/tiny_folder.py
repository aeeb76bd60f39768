"""TinyFolder: ``ROOT/tiny_folder/images/<class>/<image>.png``, split file ``split_tiny.json``
(``{"train"|"val"|"test": [[relpath, label, classname], ...]}``), few-shot subsets pickled to
``split_fewshot/shot_K-seed_S.pkl`` with plain pickle, as the official dataset modules do."""
import os
import pickle

from dassl.data.datasets import DATASET_REGISTRY, Datum, DatasetBase
from dassl.utils import check_isfile, listdir_nohidden, mkdir_if_missing, read_json, write_json


@DATASET_REGISTRY.register()
class TinyFolder(DatasetBase):
    dataset_dir = "tiny_folder"

    def __init__(self, cfg):
        root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        self.dataset_dir = os.path.join(root, self.dataset_dir)
        self.image_dir = os.path.join(self.dataset_dir, "images")
        self.split_path = os.path.join(self.dataset_dir, "split_tiny.json")
        self.split_fewshot_dir = os.path.join(self.dataset_dir, "split_fewshot")
        mkdir_if_missing(self.split_fewshot_dir)
        if not check_isfile(self.split_path):
            self.write_split()
        split = read_json(self.split_path)
        train, val, test = (self.to_datums(split[k]) for k in ("train", "val", "test"))
        num_shots = cfg.DATASET.NUM_SHOTS
        if num_shots >= 1:
            preprocessed = os.path.join(self.split_fewshot_dir, f"shot_{num_shots}-seed_{cfg.SEED}.pkl")
            if os.path.exists(preprocessed):
                print(f"Loading preprocessed few-shot data from {preprocessed}")
                # as the official Dassl repos do (their code, not the harness's): the file is the one this
                # miniature repo pickled itself into the test's temporary data root a moment earlier
                with open(preprocessed, "rb") as file:
                    data = pickle.load(file)
                    train, val = data["train"], data["val"]
            else:
                train = self.generate_fewshot_dataset(train, num_shots=num_shots)
                val = self.generate_fewshot_dataset(val, num_shots=min(num_shots, 4))
                print(f"Saving preprocessed few-shot data to {preprocessed}")
                with open(preprocessed, "wb") as file:
                    pickle.dump({"train": train, "val": val}, file, protocol=pickle.HIGHEST_PROTOCOL)
        super().__init__(train_x=train, val=val, test=test)

    def to_datums(self, rows):
        return [Datum(impath=os.path.join(self.image_dir, rel), label=int(y), classname=c) for rel, y, c in rows]

    def write_split(self):
        split = {"train": [], "val": [], "test": []}
        for label, classname in enumerate(listdir_nohidden(self.image_dir, sort=True)):
            names = listdir_nohidden(os.path.join(self.image_dir, classname), sort=True)
            for i, name in enumerate(names):
                key = ("test", "val", "train", "train")[i % 4] if len(names) >= 4 else "train"
                split[key].append([f"{classname}/{name}", label, classname])
        write_json(split, self.split_path)
        print(f"Saved split to {self.split_path}")
