"""MSGNN (Wang et al., IJCAI 2024); importing the package registers the ``msgnn`` model and its
official-weights loader."""
from . import model  # noqa: F401  (registers "msgnn")
from . import official  # noqa: F401  (registers the official loader of "msgnn")
from .model import MSGNN, msgnn

__all__ = ["MSGNN", "msgnn"]
