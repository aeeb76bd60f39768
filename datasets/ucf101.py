"""UCF101: ``ucf101/UCF-101-midframes/<Action_Name>/*.jpg``, ``split_zhou_UCF101.json`` (§2.1). A missing
split is generated from ``ucfTrainTestlist/classInd.txt``, ``trainlist01.txt`` (80/20 train/val per
class) and ``testlist01.txt``; class name = CamelCase action split on capitals joined by ``_`` (§2.3)."""
import os
import re

from engine.data import DATASET_REGISTRY, Datum
from engine.data.base_dataset import DatasetError
from engine.data.split_dataset import SplitDataset
from engine.data.splits import read_text_lines, split_trainval


def rename_action(action):
    """``ApplyEyeMakeup`` -> ``Apply_Eye_Makeup``."""
    return "_".join(re.findall("[A-Z][^A-Z]*", action))


@DATASET_REGISTRY.register()
class UCF101(SplitDataset):
    folder = "ucf101"
    image_subdir = "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"
    raw_files_hint = "ucf101/ucfTrainTestlist/classInd.txt, trainlist01.txt and testlist01.txt"

    def read_data(self, cname2lab, text_file):
        path = os.path.join(self.dataset_dir, "ucfTrainTestlist", text_file)
        items = []
        for line in read_text_lines(path, "UCF101 list"):
            entry = line.split(" ")[0]
            if entry.count("/") != 1:
                raise DatasetError(f"{path}: malformed line {line!r}; expected '<Action>/<video>.avi ...'")
            action, filename = entry.split("/")
            if action not in cname2lab:
                raise DatasetError(f"{path}: action {action!r} is not in classInd.txt")
            renamed = rename_action(action)
            impath = os.path.join(self.image_dir, renamed, filename.replace(".avi", ".jpg"))
            items.append(Datum(impath, cname2lab[action], 0, renamed))
        return items

    def generate_split(self):
        cname2lab = {}
        class_file = os.path.join(self.dataset_dir, "ucfTrainTestlist", "classInd.txt")
        for line in read_text_lines(class_file, "UCF101 class list"):
            label, classname = line.split(" ")
            cname2lab[classname] = int(label) - 1
        trainval = self.read_data(cname2lab, "trainlist01.txt")
        test = self.read_data(cname2lab, "testlist01.txt")
        train, val = split_trainval(trainval, source="trainlist01.txt")
        return train, val, test
