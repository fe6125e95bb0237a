"""The LBNet network: a symmetric CNN (three LFFMs run twice) and a recursive Transformer."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, cast, get_args

import torch
from torch import Tensor, nn

from lbnet_deploy.descriptor import ModelDescriptor
from lbnet_deploy.metadata import FORMS, IO, IO_PEAK, Form

from .blocks import LFFM, ChannelAttention, PatchTokens, TransBlock, conv

# "static": all runs batched, N known when traced (fixed-size export); "dynamic": padded and
# masked runs (any size); "reference": the straightforward port, one run at a time (parity's
# oracle, light on memory)
Ops = Literal["static", "dynamic", "reference"]


class LBNet(nn.Module):
    """LBNet / LBNet-T on 0..255 RGB input (NCHW float), output s times larger.

    The descriptor holds the hyper-parameters (variant, scale, F, heads, attention width);
    `descriptor.recursions` sets how often each TransBlock is applied (3 as trained; other
    values only serve timing the paper's TM-k rows). `ops` picks the attention implementation
    (`Ops`) and `form` the attention's layout (`blocks.Form`: TensorRT's or a CPU runtime's);
    `using_ops` switches them for a block of code and restores them.
    """

    def __init__(self, descriptor: ModelDescriptor, ops: Ops = "static") -> None:
        super().__init__()
        self.descriptor = descriptor
        f, s = descriptor.n_feats, descriptor.scale
        d, a, h = descriptor.token_dim, descriptor.attn_dim, descriptor.heads
        self.sub_mean = conv(3, 3, 1)  # mean shift as 1x1 convs: their weights are in the file
        self.head = conv(3, f, 3)
        self.r1, self.r2, self.r3 = LFFM(f), LFFM(f), LFFM(f)
        self.se1, self.se2, self.se3 = ChannelAttention(f), ChannelAttention(f), ChannelAttention(f)
        self.c1 = conv(6 * f, f, 1)
        self.attention = TransBlock(d, a, h)
        self.c2 = conv(f, f, 3)
        self.attention2 = TransBlock(d, a, h)
        self.c3 = conv(f, f, 3)
        self.tail = nn.Sequential(conv(f, 3 * s * s, 3), nn.PixelShuffle(s))
        self.add_mean = conv(3, 3, 1)
        self.tokens = PatchTokens(f)
        self.set_ops(ops)

    @property
    def ops(self) -> Ops:
        return cast(Ops, self.attention.atten.mode)

    @property
    def form(self) -> Form:
        return self.attention.atten.form

    def set_ops(self, mode: Ops, form: Form | None = None) -> LBNet:
        """Pick the attention/patch implementation (`Ops`) and, where given, the attention's
        layout (`Form`) for this model from now on."""
        if mode not in get_args(Ops):
            raise ValueError(f"unknown ops mode {mode!r}")
        if form is not None and form not in FORMS:
            raise ValueError(f"unknown attention form {form!r}")
        self.tokens.reference = mode == "reference"
        for block in (self.attention, self.attention2):
            block.atten.mode = mode
            block.atten.form = form or block.atten.form
        return self

    @contextmanager
    def using_ops(
        self, mode: Ops, form: Form | None = None, *, eval_mode: bool = True
    ) -> Iterator[LBNet]:
        """`mode`, `form` (and eval mode) inside the block, the caller's settings restored after
        it: an export never changes the model it was given."""
        previous, training = (self.ops, self.form), self.training
        self.set_ops(mode, form)
        if eval_mode:
            self.eval()
        try:
            yield self
        finally:
            self.set_ops(*previous)
            self.train(training)

    def with_io(self, io: IO) -> LBNet:
        """This model for inputs and outputs in `io`'s range (metadata.IO): itself for "255";
        for "unit" a copy whose first and last 1x1 convs take the scaling, so the graph has no
        extra node: sub_mean (weight I, bias -255 mean) gets weight 255 I, add_mean (weight I,
        bias +255 mean) gets weight and bias / 255."""
        factor = 255.0 / IO_PEAK[io]
        if factor == 1.0:
            return self
        model = copy.deepcopy(self)
        bias = model.add_mean.bias
        assert bias is not None  # conv() gives every conv a bias
        with torch.no_grad():
            model.sub_mean.weight.mul_(factor)
            model.add_mean.weight.div_(factor)
            bias.div_(factor)
        return model

    def transformer(self, block: TransBlock, x: Tensor) -> Tensor:
        """One recursive stage: unfold to 3x3-patch tokens, apply `block` k times, fold back."""
        h, w = x.shape[2], x.shape[3]
        t = self.tokens.unfold(x)
        for _ in range(self.descriptor.recursions):
            t = block(t)
        return self.tokens.fold(t, h, w)

    def forward(self, img: Tensor) -> Tensor:
        x0 = self.head(self.sub_mean(img))
        y1 = self.r1(x0)
        y2 = self.r2(y1)
        y3 = self.r3(y2)
        # the symmetric half reuses r1..r3's weights, fed with channel-attended skips
        y4 = self.r1(y3 + self.se1(y1))
        y5 = self.r2(y4 + self.se2(y2))
        y6 = self.r3(y5 + self.se3(y3))
        t = self.c1(torch.cat([y1, y2, y3, y4, y5, y6], dim=1))
        t = self.c2(self.transformer(self.attention, t))
        t = self.c3(self.transformer(self.attention2, t))
        return self.add_mean(self.tail(t + x0))
