"""Few-shot sampling (Dassl's ``generate_fewshot_dataset``) and the base/new class split.

``generate_fewshot_dataset`` reproduces Dassl exactly: per source, group by label in first-appearance
order, ``random.sample(items, K)`` per label with the GLOBAL ``random`` module (so the picks depend on
``random.seed(cfg.SEED)`` having just been called), every item when a label has fewer than K.
``subsample_classes`` implements ``DATASET.SUBSAMPLE_CLASSES`` (all | base | new): sorted labels of the
first source, first ``ceil(n/2)`` are base, relabelled from 0, every source filtered.
"""
import math
import random
from collections import OrderedDict

from engine.utils.logger import get_logger

from .datum import Datum


def split_dataset_by_label(data_source):
    """``OrderedDict label -> [Datum]`` in first-appearance order of the labels."""
    output = OrderedDict()
    for item in data_source:
        output.setdefault(item.label, []).append(item)
    return output


def generate_fewshot_dataset(*data_sources, num_shots=-1, repeat=False):
    """Dassl's K-shot sampler; one list for one source, else a list of lists. ``num_shots < 1``: unchanged."""
    if num_shots < 1:
        return data_sources[0] if len(data_sources) == 1 else list(data_sources)
    get_logger().info(f"Creating a {num_shots}-shot dataset")
    output = []
    for data_source in data_sources:
        dataset = []
        for items in split_dataset_by_label(data_source).values():
            if len(items) >= num_shots:
                sampled = random.sample(items, num_shots)
            elif repeat:
                sampled = random.choices(items, k=num_shots)
            else:
                sampled = items
            dataset.extend(sampled)
        output.append(dataset)
    return output[0] if len(output) == 1 else output


def subsample_classes(*data_sources, subsample="all"):
    """Base/new split: labels ``< ceil(n/2)`` are base, the rest new (relabelled from 0); returns one
    filtered, relabelled list per source."""
    subsample = str(subsample).lower()
    if subsample not in ("all", "base", "new"):
        raise ValueError(f"DATASET.SUBSAMPLE_CLASSES must be 'all', 'base' or 'new', got {subsample!r}")
    if subsample == "all":
        return list(data_sources)
    labels = sorted({item.label for item in data_sources[0]})
    m = math.ceil(len(labels) / 2)
    get_logger().info(f"SUBSAMPLE {subsample.upper()} CLASSES!")
    selected = labels[:m] if subsample == "base" else labels[m:]
    relabeler = {y: y_new for y_new, y in enumerate(selected)}
    output = []
    for data_source in data_sources:
        output.append([
            Datum(impath=item.impath, label=relabeler[item.label], classname=item.classname)
            for item in data_source if item.label in relabeler
        ])
    return output
