"""This repo's "fork" of clip: the download table and ``build_model`` of the installed openai-clip package."""
import importlib.util
import os
import sys

__all__ = ["_MODELS", "_download", "build_model", "tokenize"]

_MODELS = {"ViT-B/16": "https://openaipublic.azureedge.net/clip/models/"
                       "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt"}


def _installed_file(name):
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for entry in sys.path:
        path = os.path.join(entry or ".", "clip", name)
        if os.path.abspath(entry or ".") != here and os.path.isfile(path):
            return path
    raise ImportError(f"openai-clip's clip/{name} not found")


def _load(name, filename):
    spec = importlib.util.spec_from_file_location(name, _installed_file(filename))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_model = _load("clip.model", "model.py")
_tokenizer = _load("clip.simple_tokenizer", "simple_tokenizer.py")
_tok = _tokenizer.SimpleTokenizer()
build_model = _model.build_model


def _download(url, root=os.path.expanduser("~/.cache/clip")):
    raise RuntimeError(f"no network in this test repo: cannot download {url}")


def tokenize(texts, context_length=77):
    import torch

    texts = [texts] if isinstance(texts, str) else texts
    sot, eot = _tok.encoder["<|startoftext|>"], _tok.encoder["<|endoftext|>"]
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        tokens = [sot] + _tok.encode(text)[:context_length - 2] + [eot]
        result[i, :len(tokens)] = torch.tensor(tokens)
    return result
