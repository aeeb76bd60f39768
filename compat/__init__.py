"""Running foreign code on the engine: the Dassl compatibility layer (``compat/dassl_shim``, a folder on
``sys.path`` only under ``train.py --dassl-repo``) and its runner (``compat.dassl_runner``).

Layer: above ``engine`` (imports only ``engine``), below ``train.py``; nothing in ``engine``, ``trainers``
or ``datasets`` imports it.
"""
