from .clip import *  # noqa: F401,F403  (the forked package layout: ``from clip import clip``)
