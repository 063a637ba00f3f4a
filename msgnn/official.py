"""Official MSGNN weights (supersupercong/MSGNN, ``msgnn/config/model.py``) -> our MSGNN.

The official model is one flat module (``res_group``, ``convert_rainy*``, ``graph_*``/``gcn_*``,
``fuse``, ``out``); ours groups the same layers by concept. The map below is by rule, and the
configuration (N sub-networks, M blocks, exemplar branch, fusion form) is read off the checkpoint
itself, so a checkpoint of any official setting loads without extra arguments.

Weights trained by the official code only make sense with its graph construction, so the loader
defaults to the official switches (``window_align="official"``, ``shared_embedding=False``,
``train_embedding=False``; see README, Deviations); pass them explicitly to override. The
official code reads OpenCV BGR images, so the returned model flips RGB input to BGR and the
output back (``channel_order="bgr"``, as for RESCAN, DCSFN and SPANet).
"""
from __future__ import annotations

import re

import torch

from benchmark.core.official import load_mapped, read_state, rename_by_rules
from benchmark.core.registry import register_official

from .model import MSGNN, msgnn

_BRANCH = {"1": "scale1", "2": "scale2", "4": "scale4", "guide": "exemplar"}
_STEM = {"convert_rainy1": "scale1", "convert_rainy2": "scale2", "convert_rainy4": "scale4",
         "convert_guide": "exemplar"}
OFFICIAL_SWITCHES = {"window_align": "official", "shared_embedding": False, "train_embedding": False}


def _chain(rest: str) -> str | None:
    """Inside a dense chain (official DenseConnection/Dense): units, 1x1 dense convs, fusion."""
    return rename_by_rules(rest, ((r"units\.(\d+)\.avg_eca\.(alpha|gamma|beta)", r"units.\1.att.\2"),
                                 (r"units\.(\d+)\.res\.0\.(weight|bias)", r"units.\1.body.0.0.\2"),
                                 (r"units\.(\d+)\.res\.2\.(weight|bias)", r"units.\1.body.1.\2"),
                                 (r"conv1x1\.(\d+)\.0\.(weight|bias)", r"dense.\1.0.\2"),
                                 (r"conv_fusion\.0\.(weight|bias)", r"fusion.0.\1")))


def _gcn(rest: str) -> str | None:
    """GCNBlock: the official wraps every conv in a Sequential (``.0``); ours only where an
    activation follows."""
    return rename_by_rules(rest, ((r"knn_downsample\.0\.0\.(weight|bias)", r"knn_downsample.0.\1"),
                                 (r"knn_downsample\.1\.0\.(weight|bias)", r"knn_downsample.2.0.\1"),
                                 (r"knn_downsample\.2\.0\.(weight|bias)", r"knn_downsample.3.\1"),
                                 (r"weightnet_(lr|hr)\.0\.0\.(weight|bias)", r"weightnet_\1.0.\2"),
                                 (r"weightnet_(lr|hr)\.1\.body\.0\.(weight|bias)", r"weightnet_\1.1.body.0.0.\2"),
                                 (r"weightnet_(lr|hr)\.1\.body\.2\.(weight|bias)", r"weightnet_\1.1.body.1.\2"),
                                 (r"weightnet_(lr|hr)\.2\.0\.(weight|bias)", r"weightnet_\1.2.\2")))


def official_name_to_ours(name: str) -> str | None:
    """Official MSGNN state-dict key -> ours (None: unknown)."""
    if m := re.fullmatch(r"convert_rainy\.(weight|bias)", name):
        return f"head.{m[1]}"
    if m := re.fullmatch(r"res_group\.(\d+)\.(.+)", name):
        rest = _chain(m[2])
        return f"subnets.{m[1]}.{rest}" if rest else None
    if m := re.fullmatch(r"(convert_rainy[124]|convert_guide)\.(?:0\.(weight|bias)|2\.(.+))", name):
        if m[2]:
            return f"stems.{_STEM[m[1]]}.head.0.{m[2]}"
        rest = _chain(m[3])
        return f"stems.{_STEM[m[1]]}.chain.{rest}" if rest else None
    if m := re.fullmatch(r"graph_(1|2|4|guide)\.embedcnn([12])\.(\d+)\.0\.(weight|bias)", name):
        # Graph.forward(x, y): embedcnn1 embeds the database x, embedcnn2 the query y
        which = "embed_db" if m[2] == "1" else "embed_query"
        return f"graphs.{_BRANCH[m[1]]}.{which}.{m[3]}.0.{m[4]}"
    if m := re.fullmatch(r"gcn_(1|2|4|guide)\.(.+)", name):
        rest = _gcn(m[2])
        return f"gcns.{_BRANCH[m[1]]}.{rest}" if rest else None
    if m := re.fullmatch(r"fuse\.(\d+)\.([02])\.(weight|bias)", name):
        return f"fuse.{m[1]}.{'0.0' if m[2] == '0' else '1'}.{m[3]}"
    if m := re.fullmatch(r"out\.([02])\.(weight|bias)", name):
        return f"tail.{'0.0' if m[1] == '0' else '1'}.{m[2]}"
    return None


def official_config(state) -> dict:
    """Builder arguments read off an official state dict: N, M, exemplar branch, fusion form."""
    groups = {int(k.split(".")[1]) for k in state if k.startswith("res_group.")}
    units = {int(k.split(".")[3]) for k in state if k.startswith("res_group.0.units.")}
    cfg = {}
    if groups:
        cfg["n_subnets"] = max(groups) + 1
    if units:
        cfg["blocks"] = max(units) + 1
    if groups and not any(".avg_eca." in k for k in state):
        cfg["channel_attention"] = "none"  # settings.eca = False: plain residual blocks
    graph = any(k.startswith("graph_") for k in state)
    cfg["graph"] = graph
    if graph:
        cfg["exemplar"] = any(k.startswith("graph_guide.") for k in state)
        w = state.get("fuse.0.0.weight")
        if w is not None and w.dim() == 4:
            cfg["fusion"] = "1x1" if w.shape[-1] == 1 else "5x5"
    return cfg


def _flip_images(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    args = tuple(a.flip(1) if i < 2 and isinstance(a, torch.Tensor) else a for i, a in enumerate(args))
    if isinstance(kwargs.get("exemplar"), torch.Tensor):
        kwargs = {**kwargs, "exemplar": kwargs["exemplar"].flip(1)}
    return args, kwargs


def bgr_boundary(model: MSGNN) -> MSGNN:
    """Make ``model`` take and return RGB while its layers see BGR, as official weights expect
    (the official loader reads OpenCV BGR). Done with forward hooks, so the state dict, the
    builder arguments and every attribute stay those of a plain MSGNN."""
    model.register_forward_pre_hook(lambda m, args, kwargs: _flip_images(args, kwargs), with_kwargs=True)
    model.register_forward_hook(lambda m, args, out: out.flip(1))
    model.channel_order = "bgr"
    return model


@register_official("msgnn")
def from_official(source, channel_order: str = "bgr", **kwargs) -> MSGNN:
    """MSGNN holding official weights (path or mapping); configuration read off the weights,
    official graph switches by default, any builder argument can be overridden.
    ``channel_order="bgr"`` (default): RGB in and out, BGR inside, as the official code was trained."""
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    state = read_state(source, "MSGNN")
    args = {**official_config(state), **OFFICIAL_SWITCHES, **kwargs}
    model = load_mapped(msgnn(**args), state, official_name_to_ours, source, "MSGNN")
    return bgr_boundary(model) if channel_order == "bgr" else model
