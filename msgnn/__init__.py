"""MSGNN (Wang et al., IJCAI 2024); importing the package registers the ``msgnn`` model."""
from . import model  # noqa: F401  (registers "msgnn")
from .model import MSGNN, msgnn

__all__ = ["MSGNN", "msgnn"]
