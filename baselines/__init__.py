"""The eight baselines of MSGNN's Table 1, one module each; importing a module registers it."""
from . import dcsfn, dualgcn, moss, mspfn, prenet, rcdnet, rescan, spanet  # noqa: F401
