"""MOSS: "Memory Oriented Transfer Learning for Semi-Supervised Image Deraining",
H. Huang, A. Yu, R. He, CVPR 2021.

Re-implementation of the released inference generator (github.com/hhb072/MOSS, ``networks.py``
``NetG`` with ``test.yaml``: ngf 16, 5 blocks, 3 scales, 4 layers per stage, delta 16, 512
memory items): 2,855,939 parameters. Sub-module names follow the official state dict
(``head``, ``enc.enc{i}.{j}.conv1/conv2/translation``, ``memory.units``, ``dec.dec{i}``,
``fuse.fuse{i}.{norm,alpha,gamma,beta,affine_gamma,affine_beta}``, ``tail``), so the released
``ddn_ssir.pth`` (a plain state dict, as ``test.py`` loads it; not available here to check)
should load with ``load_state_dict``. The repository's ``train/`` folder builds a different
generator (2,493,140 parameters); only its recipe facts are used here.

Conventions: the network works on RGB in [-1, 1] (mean/std 0.5) and ends in tanh; we convert
from and to the suite's [0, 1]. The encoder halves the resolution three times, so H and W are
made multiples of 8 inside ``forward``: reflect padding at the bottom/right (``fit="reflect"``,
what this suite's evaluator does too, ``pad_multiple = 8``) or the official real-image test's
bicubic resize there and back (``fit="bicubic"``).

Memory read, as released: features and items are L2-normalised; each feature's best item is
found; the table is moved by an EMA (rate 0.999) towards the mean of the features assigned to
each item (items with none are scaled by 0.999), and this updated table is what the read uses,
also in eval mode. It is written back only in train mode, so eval calls are stateless: the
output never depends on earlier calls. Within one call the EMA pools every feature of the
batch, so an image's output depends (very weakly, through the 0.001 step) on the other images
in its batch, exactly as in the official code; evaluate with batch 1 to avoid it. The table
gets no gradient (the official code reads ``.data``); it still counts as a parameter.

Training. Default in this suite: supervised on synthetic pairs with the shared settings.
Own recipe (``own_loss``): L1 in the [-1, 1] space, Adam 2e-4, batch 32, 256x256 crops, 500
epochs of 5 passes over the files (``data_augment``), no schedule. With ``pretrain_epochs =
total_epochs = 500`` the official loop (epochs 0..500) runs the supervised ``train_sl`` (plain L1)
in all but its final epoch; ``weight_pixel = 10`` of ``train/config.yaml`` weighs L1 only in that
last, semi-supervised epoch (``train_st``).
The semi-supervised part (EMA teacher pseudo-labels + TV on unlabeled real images) is provided
as ``semi_supervised_loss`` and ``ema_teacher_update`` for a loop that feeds real images; the
shared engine does not, and the official rain-transfer augmentation is not implemented.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import check_rgb_batch, load_mapped, read_state, register_model, register_official, stage_outputs


class ResidualBlock(nn.Module):
    """3x3 conv (to the wider width) -> LeakyReLU(0.02) -> 3x3 conv, plus a (projected) shortcut.

    ``up`` upsamples the input before everything (shortcut included); ``down`` average-pools
    after the addition. No activation after the sum and no normalisation, as released.
    """

    def __init__(self, cin: int, cout: int, down: bool = False, up: bool = False) -> None:
        super().__init__()
        self.down, self.up = down, up
        mid = max(cin, cout)
        self.conv1 = nn.Conv2d(cin, mid, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(mid, cout, 3, padding=1, bias=False)
        self.translation = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        out = self.conv2(F.leaky_relu(self.conv1(x), 0.02))
        out = out + (self.translation(x) if self.translation is not None else x)
        return F.avg_pool2d(out, 2) if self.down else out


def _stage(cin: int, cout: int, layers: int, down: bool = False, up: bool = False) -> nn.Sequential:
    # Only the first block changes width and resolution.
    return nn.Sequential(ResidualBlock(cin, cout, down, up), *(ResidualBlock(cout, cout) for _ in range(layers - 1)))


class MemoryBlock(nn.Module):
    """Replaces each feature vector by a softmax(cosine)-weighted mix of ``items`` memory items."""

    def __init__(self, dim: int, items: int, rate: float = 0.999) -> None:
        super().__init__()
        self.rate = rate
        self.units = nn.Embedding(items, dim)  # N(0, 1) init, as nn.Embedding does

    def _ema(self, feats: torch.Tensor, score: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(score.argmax(1), table.shape[0]).to(feats.dtype)  # (n, k)
        means = onehot.t() @ feats / (onehot.sum(0) + 1e-6).unsqueeze(1)  # (k, c), 0 for unused items
        return table * self.rate + means * (1 - self.rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        feats = x.permute(0, 2, 3, 1).reshape(-1, c)
        table = self.units.weight.detach()
        fn = F.normalize(feats, dim=1)
        score = fn @ F.normalize(table, dim=1).t()
        table = self._ema(feats.detach(), score.detach(), table)
        if self.training:  # persisted only while training; eval reads the updated copy and drops it
            with torch.no_grad():
                self.units.weight.copy_(table)
        score = fn @ F.normalize(table, dim=1).t()
        read = score.softmax(1) @ table
        return read.view(b, h, w, c).permute(0, 3, 1, 2)


class FuseBlock(nn.Module):
    """Skip fusion: normalised encoder feature modulated by the decoder feature (zero-init) or by a
    learned per-channel affine, mixed by a sigmoid gate that training zeroes for 20% of samples."""

    def __init__(self, x_dim: int, res_dim: int, drop: float = 0.2) -> None:
        super().__init__()
        self.drop = drop
        self.norm = nn.BatchNorm2d(res_dim, affine=False)
        self.alpha = nn.Conv2d(res_dim, 1, 1, bias=False)
        self.gamma = nn.Conv2d(x_dim, res_dim, 1, bias=False)
        self.beta = nn.Conv2d(x_dim, res_dim, 1, bias=False)
        self.affine_gamma = nn.Parameter(torch.zeros(1, res_dim, 1, 1))
        self.affine_beta = nn.Parameter(torch.zeros(1, res_dim, 1, 1))
        nn.init.zeros_(self.gamma.weight)  # start as a plain normalised skip
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, res: torch.Tensor) -> torch.Tensor:
        res = self.norm(res)
        out0 = res * (1 + self.gamma(x)) + self.beta(x)
        out1 = res * (1 + self.affine_gamma) + self.affine_beta
        alpha = torch.sigmoid(self.alpha(res))
        if self.training:
            alpha = alpha * (torch.rand(res.shape[0], 1, 1, 1, device=res.device) > self.drop).to(alpha.dtype)
        return (1 - alpha) * out0 + alpha * out1


class MOSS(nn.Module):
    """Encoder -> memory read -> decoder with fused skips; clean = tanh(tail(head - decoder))."""

    pad_multiple = 8

    def __init__(self, ngf: int = 16, num_blocks: int = 5, num_scales: int = 3, num_layers: int = 4,
                 delta: int = 16, kdim: int = 512, moving_average_rate: float = 0.999, fit: str = "reflect") -> None:
        super().__init__()
        if fit not in ("reflect", "bicubic"):
            raise ValueError(f"fit must be 'reflect' or 'bicubic', got {fit!r}")
        if num_scales > num_blocks:
            raise ValueError(f"num_scales ({num_scales}) cannot exceed num_blocks ({num_blocks})")
        self.fit, self.num_blocks = fit, num_blocks
        self.pad_multiple = 2**num_scales
        self.head = nn.Conv2d(3, ngf, 3, padding=1, bias=False)
        widths = [ngf + i * delta for i in range(num_blocks + 1)]
        self.enc = nn.ModuleDict({f"enc{i}": _stage(widths[i], widths[i + 1], num_layers, down=i < num_scales)
                                  for i in range(num_blocks)})
        self.memory = MemoryBlock(widths[-1], kdim, moving_average_rate)
        self.dec = nn.ModuleDict()
        self.fuse = nn.ModuleDict()
        for i in range(num_blocks):
            cin, cout = widths[num_blocks - i], widths[num_blocks - i - 1]
            self.dec[f"dec{i}"] = _stage(cin, cout, num_layers, up=i >= num_blocks - num_scales)
            if i < num_blocks - 1:
                self.fuse[f"fuse{i}"] = FuseBlock(cout, cout)
        self.tail = nn.Conv2d(ngf, 3, 3, padding=1)

    def generate(self, y: torch.Tensor) -> torch.Tensor:
        """The released network on [-1, 1] input whose H, W are multiples of ``pad_multiple``."""
        head = self.head(y)
        x, skips = head, []
        for i in range(self.num_blocks):
            x = self.enc[f"enc{i}"](x)
            skips.append(x)
        x = self.dec["dec0"](self.memory(x))
        for i in range(self.num_blocks - 1):
            x = self.fuse[f"fuse{i}"](x, skips[-2 - i])  # same-resolution encoder output
            x = self.dec[f"dec{i + 1}"](x)
        return torch.tanh(self.tail(head - x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_rgb_batch(x, "MOSS", min_size=self.pad_multiple)
        h, w = x.shape[-2:]
        m = self.pad_multiple
        ph, pw = -h % m, -w % m
        y = x * 2 - 1
        if ph or pw:
            if self.fit == "reflect":
                y = F.pad(y, (0, pw, 0, ph), mode="reflect")
            else:
                y = F.interpolate(y, size=(h + ph, w + pw), mode="bicubic", align_corners=False)
        out = self.generate(y)
        if ph or pw:
            out = out[..., :h, :w] if self.fit == "reflect" else F.interpolate(out, size=(h, w), mode="bicubic",
                                                                                align_corners=False)
        return (out + 1) / 2

    def own_loss(self, outputs, rainy: torch.Tensor, clean: torch.Tensor, weight_pixel: float = 1.0) -> torch.Tensor:
        """Official supervised phase (``train_sl``): L1 in the network's [-1, 1] space. ``weight_pixel``
        = 10 is the weight the semi-supervised phase gives the same term."""
        out = stage_outputs(outputs)[-1]
        return weight_pixel * F.l1_loss(out * 2 - 1, clean * 2 - 1)

    def semi_supervised_loss(self, teacher: "MOSS", real: torch.Tensor, weight_real: float = 1.0,
                             weight_pseudo: float = 1.0, weight_tv: float = 1e-3) -> torch.Tensor:
        """Self-training term on unlabeled real rainy images ([0, 1]): L1 to the EMA teacher's
        pseudo-label plus total variation, in [-1, 1] space (``train/train.py`` ``train_st``
        without its rain-transfer augmentation). Add it to ``own_loss`` in a loop that feeds
        real images, and call ``ema_teacher_update`` after each optimiser step."""
        teacher.eval()
        with torch.no_grad():
            pseudo = teacher(real) * 2 - 1
        pred = self(real) * 2 - 1
        tv = (F.mse_loss(pred[:, :, 1:], pred[:, :, :-1]) + F.mse_loss(pred[..., 1:], pred[..., :-1])) / 2
        return weight_real * (weight_pseudo * F.l1_loss(pred, pseudo) + weight_tv * tv)

    def make_teacher(self) -> "MOSS":
        """Frozen copy of this network to serve as the EMA teacher."""
        teacher = copy.deepcopy(self).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher

    @torch.no_grad()
    def ema_teacher_update(self, teacher: "MOSS", decay: float = 0.999) -> None:
        """teacher <- decay * teacher + (1 - decay) * student, parameters only (as released)."""
        for t, s in zip(teacher.parameters(), self.parameters()):
            t.mul_(decay).add_(s.detach(), alpha=1 - decay)


@register_model("moss")
def moss(ngf: int = 16, num_blocks: int = 5, num_scales: int = 3, num_layers: int = 4, delta: int = 16,
         kdim: int = 512, moving_average_rate: float = 0.999, fit: str = "reflect") -> MOSS:
    """Released inference configuration (``test.yaml``): 2,855,939 parameters."""
    return MOSS(ngf, num_blocks, num_scales, num_layers, delta, kdim, moving_average_rate, fit)


@register_official("moss")
def from_official(source, **kwargs) -> MOSS:
    """MOSS holding official weights (path or mapping): our module names are the official ones
    (hhb072/MOSS networks.py), so the map is the identity; loading is strict."""
    state = read_state(source, "MOSS")
    return load_mapped(moss(**kwargs), state, lambda name: name, source, "MOSS")
