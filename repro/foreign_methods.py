"""Foreign methods: the official Dassl repositories, run unmodified through ``train.py --dassl-repo``.

Each entry is declared like a native ``METHOD`` (read as data, torch-free) plus where the code lives:

* ``key``: ``--methods`` name (``maple@upstream``); ``trainer``: the repo's ``--trainer`` value;
* ``source``: the tag of its rows and output folders (``<trainer>@<source>``, never merged with ours);
* ``repo``: the GitHub repository; ``commit``: the commit the support matrix was tested at;
  ``repo_dir``: the folder holding ``train.py`` inside the checkout (ProGrad, KgCoOp);
* ``repo_env``: environment variable with the checkout's path; else ``$HARNESS_DASSL_REPOS/<repo name>``;
* ``config_root``: folder (relative to ``repo_dir``) holding ``configs/trainers`` and ``configs/datasets``;
* ``config_dir``, ``b2n_cfg``, ``xd_cfg``, ``node``, ``prec``, ``checkpoint``, ``title``: as for native methods.
"""

FOREIGN_METHODS = (
    {"key": "coop@upstream", "trainer": "CoOp", "source": "upstream", "repo": "KaiyangZhou/CoOp",
     "commit": "ff61507", "repo_dir": "", "repo_env": "HARNESS_REPO_COOP", "config_root": ".",
     "config_dir": "CoOp", "b2n_cfg": "vit_b16_ep50", "xd_cfg": "vit_b16_ep50", "node": "COOP", "prec": "fp16",
     "checkpoint": "prompt_learner", "title": "CoOp (official code)"},
    {"key": "maple@upstream", "trainer": "MaPLe", "source": "upstream",
     "repo": "muzairkhattak/multimodal-prompt-learning", "commit": "69bce21", "repo_dir": "",
     "repo_env": "HARNESS_REPO_MAPLE", "config_root": ".", "config_dir": "MaPLe",
     "b2n_cfg": "vit_b16_c2_ep5_batch4_2ctx", "xd_cfg": "vit_b16_c2_ep5_batch4_2ctx_cross_datasets",
     "node": "MAPLE", "prec": "fp16", "checkpoint": "MultiModalPromptLearner", "title": "MaPLe (official code)"},
    {"key": "comma@upstream", "trainer": "COMMA", "source": "upstream", "repo": "hulianyuyy/COMMA",
     "commit": "3584f31", "repo_dir": "", "repo_env": "HARNESS_REPO_COMMA", "config_root": ".",
     "config_dir": "COMMA", "b2n_cfg": "vit_b16_c2_ep5_batch4_2ctx",
     "xd_cfg": "vit_b16_c2_ep5_batch4_2ctx_cross_datasets", "node": "COMMA", "prec": "fp16",
     "checkpoint": "MultiModalPromptLearner", "title": "COMMA (official code)"},
    {"key": "kgcoop@upstream", "trainer": "KgCoOp", "source": "upstream", "repo": "htyao89/KgCoOp",
     "commit": "c43ccc3", "repo_dir": "KgCoOp", "repo_env": "HARNESS_REPO_KGCOOP", "config_root": ".",
     "config_dir": "KgCoOp", "b2n_cfg": "vit_b16_ep100_ctxv1", "xd_cfg": "vit_b16_ep100_ctxv1", "node": "COOP",
     "prec": "fp16", "checkpoint": "prompt_learner", "title": "KgCoOp (official code)"},
    {"key": "promptsrc@upstream", "trainer": "PromptSRC", "source": "upstream", "repo": "muzairkhattak/PromptSRC",
     "commit": "bb95c77", "repo_dir": "", "repo_env": "HARNESS_REPO_PROMPTSRC", "config_root": ".",
     "config_dir": "PromptSRC", "b2n_cfg": "vit_b16_c2_ep20_batch4_4+4ctx",
     "xd_cfg": "vit_b16_c2_ep20_batch4_4+4ctx", "node": "PROMPTSRC", "prec": "fp16",
     "checkpoint": "VLPromptLearner", "title": "PromptSRC (official code)"},
    {"key": "prograd@upstream", "trainer": "ProGrad", "source": "upstream", "repo": "BeierZhu/Prompt-align",
     "commit": "1b76203", "repo_dir": "ProGrad.public", "repo_env": "HARNESS_REPO_PROGRAD", "config_root": ".",
     "config_dir": "ProGrad", "b2n_cfg": "rn50_ep50", "xd_cfg": "rn50_ep50", "node": "COOP", "prec": "fp16",
     "checkpoint": "prompt_learner", "title": "ProGrad (official code)"},
    {"key": "tcp@upstream", "trainer": "TCP", "source": "upstream",
     "repo": "htyao89/Textual-based_Class-aware_prompt_tuning", "commit": "bd97bec", "repo_dir": "",
     "repo_env": "HARNESS_REPO_TCP", "config_root": ".", "config_dir": "TCP", "b2n_cfg": "vit_b16_ep100_ctxv1",
     "xd_cfg": "vit_b16_ep100_ctxv1", "node": "COOP", "prec": "fp16", "checkpoint": "prompt_learner",
     "title": "TCP (official code)"},
)
