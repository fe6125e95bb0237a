"""LBNet's building blocks as plain modules, each `forward` mirroring the paper's equations.

Gao et al., "Lightweight Bimodal Network for Single-Image Super-Resolution via Symmetric CNN and
Recursive Transformer", IJCAI 2022. Attribute names equal the official checkpoint keys, so the
state_dicts load with strict=True.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lbnet_deploy.metadata import Form


def conv(c_in: int, c_out: int, k: int, groups: int = 1, bias: bool = True) -> nn.Conv2d:
    """Stride-1 convolution with 'same' zero padding, as every LBNet conv is."""
    return nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=bias)


class ChannelAttention(nn.Module):
    """CA: global average pool -> 1x1 squeeze (C//16) -> ReLU -> 1x1 excite -> sigmoid gate."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        # integer division on purpose: LBNet-T squeezes 18 channels to 1
        self.conv_du = nn.Sequential(
            conv(channels, channels // 16, 1), nn.ReLU(), conv(channels // 16, channels, 1),
            nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return x * self.conv_du(x.mean(dim=(2, 3), keepdim=True))


class SpatialAttention(nn.Module):
    """SA: [mean, max] over channels -> 7x7 conv (no bias) -> sigmoid gate."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = conv(2, 1, 7, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv1(pooled))


class FRDAB(nn.Module):
    """Feature refinement dual-attention block."""

    def __init__(self, f: int) -> None:
        super().__init__()
        self.c1 = conv(f, f, 1)
        self.c2 = conv(f, f // 2, 3)
        self.c3 = conv(f, f // 2, 3)
        self.c4 = conv(2 * f, f, 3)
        self.c5 = conv(f // 2, f // 2, 3)
        self.c6 = conv(2 * f, f, 1)
        self.se = ChannelAttention(2 * f)
        self.sa = SpatialAttention()

    def forward(self, x: Tensor) -> Tensor:
        y1 = F.relu(self.c1(x))
        y2 = F.relu(self.c2(y1))
        y3 = F.relu(self.c3(y1))
        y4 = F.relu(self.c4(torch.cat([y1, y2, y3], dim=1)))
        y5 = self.c5(y3)
        z = torch.cat([y2, y5, y4], dim=1)
        return x + self.c6(self.se(z) + self.sa(z))


class LFFM(nn.Module):
    """Local feature fusion module: three densely connected FRDABs."""

    def __init__(self, f: int) -> None:
        super().__init__()
        self.b1, self.b2, self.b3 = FRDAB(f), FRDAB(f), FRDAB(f)
        self.c1 = conv(2 * f, f, 1, groups=2)
        self.c2 = conv(3 * f, f, 1, groups=2)
        self.c3 = conv(4 * f, f, 1)

    def forward(self, x: Tensor) -> Tensor:
        o1 = self.b1(x)
        o2 = self.b2(self.c1(torch.cat([x, o1], dim=1)))
        o3 = self.b3(self.c2(torch.cat([x, o1, o2], dim=1)))
        return x + self.c3(torch.cat([x, o1, o2, o3], dim=1))


def run_length(n: int) -> int:
    """Tokens per attention run: N // 16 as in the paper.

    The official code fails for N < 16 (a run of zero tokens); we use runs of one token there,
    the limit of the banding (each token attends to itself only), so 1x1..3x5 inputs work.
    """
    return max(n // 16, 1)


# the head dim of "flat16" (metadata.Form): 27 (LBNet-T) and 18 (LBNet) become 32
HEAD_MULTIPLE = 16


def _by_run(q: Tensor, kt: Tensor, v: Tensor, c: int) -> tuple[Tensor, Tensor, Tensor]:
    """q, v (B, h, m*c, d), kt (B, h, d, m*c) -> (B, h, m, c, d) and keys (B, h, m, d, c)."""
    b, h, mc, d = q.shape
    m = mc // c
    q, v = (t.reshape(b, h, m, c, d) for t in (q, v))
    # (B, h, d, m, c) -> (B, h, m, d, c) moves whole rows of c keys: a cheap copy
    return q, kt.reshape(b, h, d, m, c).transpose(2, 3), v


def _runs_as_batch(q: Tensor, k: Tensor, v: Tensor, c: int) -> tuple[Tensor, Tensor, Tensor]:
    """Token-major q, k, v (B, m*c, h, d) -> runs as the batch, heads second: (B*m, h, c, d),
    keys (B*m, h, d, c). Each is one Transpose next to its MatMul: the standard multi-head
    attention pattern, which OpenVINO fuses with its transposes into one kernel."""
    b, mc, h, d = q.shape
    q, k, v = (t.reshape(b * (mc // c), c, h, d) for t in (q, k, v))
    return q.transpose(1, 2), k.permute(0, 2, 3, 1), v.transpose(1, 2)


def _tokens(out: Tensor, b: int) -> Tensor:
    """(B*m, h, c, d) attention output -> token-major (B, m*c, h*d)."""
    bm, h, c, d = out.shape
    return out.transpose(1, 2).reshape(b, (bm // b) * c, h * d)


def banded_attention(q: Tensor, k: Tensor, v: Tensor, flat: bool = False) -> Tensor:
    """softmax(q kt) v inside consecutive runs of `run_length(N)` tokens; q is pre-scaled.

    Batched (`Form` "batched"): q, v (B, h, N, d), keys already transposed (B, h, d, N) (see
    `EffAttention`), result (B, h, N, d). Flat: q, k, v token-major (B, N, h, d), result
    (B, N, h*d). Same runs as the reference's `torch.split(..., N // 16)` (full runs, then one
    short run), but the full runs are one batched MatMul -> Softmax -> MatMul. N must be a
    static int here (fixed-size export, eager); see `masked_banded_attention`.
    """
    n = q.shape[1] if flat else q.shape[2]
    c = run_length(n)
    full = (n // c) * c
    if flat:
        b = q.shape[0]
        qr, kt, vr = _runs_as_batch(q[:, :full], k[:, :full], v[:, :full], c)
        out = _tokens(torch.softmax(qr @ kt, dim=-1) @ vr, b)
        if full == n:
            return out
        qt, kt, vt = (t[:, full:].transpose(1, 2) for t in (q, k, v))
        tail = torch.softmax(qt @ kt.transpose(-2, -1), dim=-1) @ vt
        return torch.cat([out, _tokens(tail, b)], dim=1)

    def runs(q: Tensor, kt: Tensor, v: Tensor) -> Tensor:
        q, kt, v = _by_run(q, kt, v, c)
        return (torch.softmax(q @ kt, dim=-1) @ v).reshape(q.shape[0], q.shape[1], full, -1)

    if full == n:
        return runs(q, k, v)
    tail = torch.softmax(q[:, :, full:] @ k[..., full:], dim=-1) @ v[:, :, full:]
    return torch.cat([runs(q[:, :, :full], k[..., :full], v[:, :, :full]), tail], dim=2)


def masked_banded_attention(q: Tensor, k: Tensor, v: Tensor, flat: bool = False) -> Tensor:
    """The same result for a symbolic N (dynamic-shape export), with no graph branches; the
    same layouts as `banded_attention`.

    Tokens are zero-padded to whole runs and the padded keys masked with -inf; padded queries
    are dropped. The padding never fills a whole run, so no softmax row is all -inf, and when
    N is a multiple of 16 the mask is all zeros.
    """
    b = q.shape[0]
    n = q.shape[1] if flat else q.shape[2]
    c = torch.sym_max(n // 16, 1)
    m = (n + c - 1) // c
    pad = m * c - n
    if flat:
        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v))
        q, kt, v = _runs_as_batch(q, k, v, c)
    else:
        q, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, v))
        q, kt, v = _by_run(q, F.pad(k, (0, pad)), v, c)
    # one row of key positions per run, (m, 1, c); flat: per run of every image, (B*m, 1, 1, c)
    key_index = torch.arange(m * c, device=q.device).reshape(m, 1, c)
    mask = torch.zeros((), dtype=q.dtype).masked_fill(key_index >= n, float("-inf"))
    if flat:
        mask = mask.expand(b, m, 1, c).reshape(b * m, 1, 1, c)
    out = torch.softmax(q @ kt + mask, dim=-1) @ v
    if flat:
        return _tokens(out, b)[:, :n]
    return out.reshape(b, out.shape[1], m * c, -1)[:, :, :n]


def pad_heads(w: Tensor, heads: int, multiple: int, dim: int = 0) -> Tensor:
    """Zero-pad each head's slice of `w` along `dim` (rows of q/k/v, columns of proj) so the
    head dim is a multiple of `multiple`."""
    d = w.shape[dim] // heads
    extra = -d % multiple
    if extra == 0:
        return w
    w = w.movedim(dim, 0)
    w = F.pad(w.reshape(heads, d, -1), (0, 0, 0, extra)).reshape(heads * (d + extra), -1)
    return w.movedim(0, dim)


def split_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """The straightforward port: a Python loop over runs, scale applied to the scores."""
    c = run_length(q.shape[2])
    outs = [
        torch.softmax((qi @ ki.transpose(-2, -1)) * scale, dim=-1) @ vi
        for qi, ki, vi in zip(q.split(c, 2), k.split(c, 2), v.split(c, 2), strict=True)
    ]
    return torch.cat(outs, dim=2)


class EffAttention(nn.Module):
    """Efficient multi-head self-attention over tokens cut into ~16 horizontal bands.

    `mode` picks the implementation: "static" (batched runs, N known when traced), "dynamic"
    (masked runs, N symbolic) or "reference" (the straightforward loop); `form` the layout of
    the runs (`Form`; the reference ignores it).
    """

    def __init__(self, dim: int, attn_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5  # from the token dim D, not from A (as trained)
        self.reduce = nn.Linear(dim, attn_dim, bias=False)
        self.qkv = nn.Linear(attn_dim, 3 * attn_dim, bias=False)
        self.proj = nn.Linear(attn_dim, dim)
        self.mode = "static"
        self.form: Form = "batched"

    def qkv_weights(self) -> tuple[Tensor, Tensor, Tensor, bool]:
        """(wq, wk, wv, folded): the scale folded into q's rows and, where that saves work,
        `reduce` folded into all three (3A x D instead of A x D + 3A x A: LBNet-T, A = D).

        The exporter folds these products to constants. Exact up to float rounding (the
        parity tests bound the difference).
        """
        wq, wk, wv = self.qkv.weight.chunk(3, dim=0)
        a, d = self.reduce.weight.shape
        folded = 3 * a * d < a * d + 3 * a * a
        if folded:
            wq, wk, wv = (w @ self.reduce.weight for w in (wq, wk, wv))
        return wq * self.scale, wk, wv, folded

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        proj = self.proj.weight
        if self.mode == "reference":
            # chunk (one Split node) rather than indexing a stacked tensor (three Gathers)
            q, k, v = (
                t.reshape(b, n, self.heads, -1).transpose(1, 2)
                for t in self.qkv(self.reduce(x)).chunk(3, dim=-1)
            )
            out = split_attention(q, k, v, self.scale)
        else:
            wq, wk, wv, folded = self.qkv_weights()
            if self.form == "flat16":
                wq, wk, wv = (pad_heads(w, self.heads, HEAD_MULTIPLE) for w in (wq, wk, wv))
                proj = pad_heads(proj, self.heads, HEAD_MULTIPLE, dim=1)
            u = x if folded else self.reduce(x)
            # banded: the fixed-size form; masked: N symbolic (dynamic export)
            attend = masked_banded_attention if self.mode == "dynamic" else banded_attention
            if self.form != "batched":  # token-major q, k, v, (B, N, h, d)
                q, k, v = (F.linear(u, w).reshape(b, n, self.heads, -1) for w in (wq, wk, wv))
                return F.linear(attend(q, k, v, flat=True), proj, self.proj.bias)
            q, v = (F.linear(u, w).reshape(b, n, self.heads, -1).transpose(1, 2) for w in (wq, wv))
            # keys computed already transposed, (B, A, N) = Wk @ u^T (ORT: one FusedMatMul with
            # transB). Projecting first and then transposing (B, h, m, c, d) keys into
            # (B, h, m, d, c) moves the innermost axis of a 5-D tensor: ~10% of the ORT CPU
            # time at 128x128 (ORT merges a separate 3-D transpose into that one).
            kt = (wk @ u.transpose(1, 2)).reshape(b, self.heads, -1, n)
            out = attend(q, kt, v)
        return F.linear(out.transpose(1, 2).reshape(b, n, -1), proj, self.proj.bias)


class Mlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim // 4)
        self.fc2 = nn.Linear(dim // 4, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class TransBlock(nn.Module):
    """Pre-norm Transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, attn_dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.atten = EffAttention(dim, attn_dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.atten(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchTokens(nn.Module):
    """3x3 unfold to tokens and its adjoint fold, as fixed one-hot convolutions.

    nn.Unfold exports as a gather chain and nn.Fold as Col2Im, which TensorRT cannot parse; a
    grouped conv with identity kernels is the same linear map and runs well on every backend.
    Token channel order is torch's unfold order, c*9 + ky*3 + kx. `reference=True` uses
    nn.functional.unfold/fold instead (the straightforward port, kept as the oracle).
    """

    unfold_w: Tensor
    fold_w: Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.reference = False
        eye = torch.eye(9).reshape(9, 1, 3, 3)
        # not in the checkpoint: non-persistent, so strict loading still matches key for key
        self.register_buffer("unfold_w", eye.repeat(channels, 1, 1, 1), persistent=False)
        # fold sums patch entry k=(ky, kx) taken from the pixel offset by (1-ky, 1-kx)
        fold_w = eye.flip(-1, -2).reshape(1, 9, 3, 3).repeat(channels, 1, 1, 1)
        self.register_buffer("fold_w", fold_w, persistent=False)

    def unfold(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, H*W, 9C) tokens in raster order."""
        if self.reference:
            return F.unfold(x, 3, padding=1).transpose(1, 2)
        patches = F.conv2d(x, self.unfold_w, padding=1, groups=self.channels)
        return patches.flatten(2).transpose(1, 2)

    def fold(self, tokens: Tensor, h: int, w: int) -> Tensor:
        """(B, H*W, 9C) -> (B, C, H, W), each pixel the SUM of the 9 patch entries covering it."""
        x = tokens.transpose(1, 2)
        if self.reference:
            return F.fold(x, (h, w), 3, padding=1)
        x = x.reshape(x.shape[0], 9 * self.channels, h, w)
        return F.conv2d(x, self.fold_w, padding=1, groups=self.channels)
