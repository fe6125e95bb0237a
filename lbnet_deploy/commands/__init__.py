"""The `lbnet-deploy` sub-commands, one module each: `register(sub)` adds its parser (with
`func=run`), `run(args)` parses nothing more, calls into the library and prints. Options shared by
several commands are in `options`. Heavy imports (torch, onnx, onnxruntime) happen inside `run`,
so `--help` is instant and the serving commands work without torch."""

from __future__ import annotations

import argparse

from . import bench, build, calibrate, export, info, parity, serve, triton, upscale
from . import eval as eval_

# in the order `lbnet-deploy --help` lists them
COMMANDS = (export, calibrate, build, triton, serve, upscale, eval_, parity, info, bench)


def register_all(sub: argparse._SubParsersAction) -> None:
    for command in COMMANDS:
        command.register(sub)


__all__ = ["COMMANDS", "register_all"]
