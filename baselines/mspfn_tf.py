"""MSPFN's official TensorFlow variables: names, layouts and the configuration they imply.

The official graphs (kuijiang94/MSPFN ``model/MSPFN.py``, training; ``model/TEST_MSPFN_M17N1.py``,
released weights) create their variables with ``deconv_layer``/``conv_layer``/``prelu`` (scope
``.../weight``, ``.../alpha``), ``tf.layers.conv2d`` inside the RCABs (``conv2d[_k]/kernel|bias``)
and ``slim.conv2d`` in the ConvLSTM (``LSTM_conv/weights|biases``). ``tf_variable_map`` pairs
each parameter of ``baselines.mspfn.MSPFN`` with one of them; ``baselines.mspfn.from_official``
uses it. Checked against the variables of both official graphs (names, shapes, order:
tests/fixtures/official/mspfn*/spec.json).
"""
from __future__ import annotations

import re
from typing import Mapping

import torch.nn as nn

# Layouts: "conv" = tf.nn.conv2d / tf.layers / slim kernel HWIO; "tconv1" = stride-1 conv2d_transpose
# filter [kh, kw, out, in] (our Conv2d needs it spatially flipped); "tconv2" = stride-2 transposed
# conv filter [kh, kw, out, in] (ConvTranspose2d [in, out, kh, kw], no flip); "vec" = as is.
TO_OURS = {
    "conv": lambda w: w.permute(3, 2, 0, 1),
    "tconv1": lambda w: w.flip(0, 1).permute(2, 3, 0, 1),
    "tconv2": lambda w: w.permute(3, 2, 0, 1),
    "vec": lambda w: w,
}
TF_SHAPE = {"conv": lambda s: (s[2], s[3], s[1], s[0]), "tconv1": lambda s: (s[2], s[3], s[0], s[1]),
             "tconv2": lambda s: (s[2], s[3], s[1], s[0]), "vec": tuple}


def tf_variable_map(model: nn.Module, released_names: bool = False) -> dict[str, tuple[str, str]]:
    """Our parameter name -> (official TF variable name, layout), for ``model``'s configuration.

    Names of the training graph (``model/MSPFN.py``: scope ``model``, units ``URAB*``), or with
    ``released_names`` those of the released test graph (``TEST_MSPFN_M17N1.py``: ``generator``,
    ``BCM*``), which differs only in these scope names.
    """
    m: dict[str, tuple[str, str]] = {}

    def conv_prelu(ours: str, tf: str, act: bool = True) -> None:
        m[f"{ours}.0.weight"] = (f"{tf}/weight", "tconv1")
        if act:
            m[f"{ours}.1.weight"] = (f"{tf}/alpha", "vec")

    def resample(ours: str, tf: str, layout: str) -> None:
        m[f"{ours}.conv.weight"], m[f"{ours}.act.weight"] = (f"{tf}/weight", layout), (f"{tf}/alpha", "vec")

    def unit(ours: str, tf: str, down: str, n: int, n_rcab: int) -> None:
        resample(f"{ours}.down", f"{tf}/{down}_{n + 1}", "conv")
        for j in range(n_rcab):  # tf.layers numbers the four RCAB convs conv2d, conv2d_1, _2, _3
            r, g = f"{ours}.body.{j}", f"{tf}/group_{n + 1}_RCAB{j + 1}/conv2d"
            for sub, k in (("body.0", ""), ("body.2", "_1"), ("attn.1", "_2"), ("attn.3", "_3")):
                m[f"{r}.{sub}.weight"], m[f"{r}.{sub}.bias"] = (f"{g}{k}/kernel", "conv"), (f"{g}{k}/bias", "vec")
            m[f"{r}.body.1.weight"], m[f"{r}.attn.2.weight"] = (f"{g}/alpha", "vec"), (f"{g}_2/alpha", "vec")
        resample(f"{ours}.up", f"{tf}/up_{n + 1}", "tconv2")

    for lvl, tf in (("1", "rnn1"), ("2", "rnn2"), ("4", "rnn4")):
        conv_prelu(f"head{lvl}", f"model/{tf}")
    for lvl, tf in (("4", "4"), ("2", "2"), ("1", "")):
        rm = "model/residual_memory"
        conv_prelu(f"coarse{lvl}.inp", f"{rm}/rain{tf}_res1")
        lstm = f"{rm}/lstm_group{tf}/convLSTM/LSTM_conv"
        m[f"coarse{lvl}.lstm.weight"] = (f"{lstm}/weights", "conv")
        m[f"coarse{lvl}.lstm.bias"] = (f"{lstm}/biases", "vec")
        conv_prelu(f"coarse{lvl}.out", f"{rm}/rain{tf}_res2")
    for ours, tf in (("4_2", "4_2"), ("4_1", "4_1"), ("2_1", "2_1")):
        resample(f"coarse_up{ours}", f"model/residual_memory/upRMM{tf}", "tconv2")
    for n, it in enumerate(model.fine):
        f, u4, u2, u1 = f"fine.{n}", f"model/URAB4_{n}", f"model/URAB2_{n}", f"model/URAB_{n}"
        unit(f"{f}.unit4", u4, "down4", n, len(it.unit4.body))
        resample(f"{f}.up4_2", f"{u2}/upURAB4_2_{n}", "tconv2")
        unit(f"{f}.unit2", u2, "down2", n, len(it.unit2.body))
        resample(f"{f}.up4_1", f"{u1}/upURAB4to1_{n}", "tconv2")
        resample(f"{f}.up2_1", f"{u1}/upURAB2to1_{n}", "tconv2")
        unit(f"{f}.unit1", u1, "down", n, len(it.unit1.body))
    for lvl, tf in (("4", "4"), ("2", "2"), ("1", "")):
        conv_prelu(f"recon{lvl}", f"model/rnn_recon{tf}")
    resample("rec_up4_2", "model/up4_2", "tconv2")
    resample("rec_up2_1", "model/up2_1", "tconv2")
    conv_prelu("tail.0", "model/rnn5")
    conv_prelu("tail.1", "model/rnn7", act=False)
    if released_names:
        m = {k: (re.sub("^model/", "generator/", t).replace("URAB", "BCM"), lay) for k, (t, lay) in m.items()}
    return m


def config_from_names(variables: Mapping, released: bool) -> dict:
    """Builder arguments implied by the variables present (blocks, RCABs per unit, widths)."""
    unit, root = ("BCM", "generator") if released else ("URAB", "model")
    blocks = {int(mt.group(1)) for n in variables if (mt := re.match(rf"{root}/{unit}4_(\d+)/", n))}
    kw: dict = {"blocks": len(blocks)} if blocks else {}
    rcabs = [len({mt.group(1) for n in variables if (mt := re.match(rf"{root}/{unit}{lvl}_0/group_1_RCAB(\d+)/", n))})
             for lvl in ("4", "2", "")]
    if all(rcabs):
        kw["rcabs"] = tuple(rcabs)
    lstm = [variables.get(f"{root}/residual_memory/lstm_group{lvl}/convLSTM/LSTM_conv/biases")
            for lvl in ("4", "2", "")]
    if all(b is not None and b.ndim == 1 for b in lstm):
        kw["lstm_hidden"] = tuple(int(b.shape[0]) // 4 for b in lstm)
    head = variables.get(f"{root}/rnn1/weight")
    if head is not None and head.ndim == 4:
        kw["channels"] = int(head.shape[2])
    return kw
