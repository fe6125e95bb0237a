"""`lbnet-deploy serve --triton REPOSITORY`: a local Triton Inference Server on an image
repository, from the nvidia-pytriton wheel (lbnet_deploy/serve.py), until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lbnet_deploy.errors import LBNetError
    from lbnet_deploy.serve import TritonServer, prepare

    if args.prepare:
        binary, env = prepare(args.wheel)
        print(f"Triton server in {binary}, its Python environment in {env}")
        return 0
    if not args.triton:
        raise LBNetError("name the repository to serve: --triton REPOSITORY (or --prepare)")
    server = TritonServer(
        Path(args.triton), args.host, args.grpc_port, args.http_port, wheel=args.wheel
    )
    try:  # stopped however this ends (start stops it itself when interrupted while loading)
        server.start(timeout_s=args.timeout)
        print(
            f"Triton serves {args.triton}: gRPC {server.grpc_url} (upscale --backend triton "
            f"--url {server.grpc_url}), HTTP {server.http_url}, ready at "
            f"{server.http_url}/v2/health/ready; log {server.log_path}; Ctrl-C stops it",
            flush=True,
        )
        assert server.process is not None
        code = server.process.wait()  # until it dies, or Ctrl-C / SIGTERM stop it
    finally:
        server.stop()
    how = (
        f"was killed by signal {-code} ({signal.strsignal(-code)})"
        if code < 0
        else f"exited with {code}"
    )
    print(f"Triton {how}: {server.failure()} (log: {server.log_path})")
    return 1


def register(sub: argparse._SubParsersAction) -> None:
    from .options import positive_int

    p = sub.add_parser("serve", help="a local Triton server on an image repository (--triton)")
    p.add_argument(
        "--triton", metavar="REPOSITORY",
        help="a repository from `lbnet-deploy triton --images --cpu`",
    )  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--grpc-port", type=positive_int, default=8001, help="(8001)")
    p.add_argument("--http-port", type=positive_int, default=8000, help="(8000; health, stats)")
    p.add_argument(
        "--wheel", help="the nvidia-pytriton 0.7.0 wheel (default: downloaded once with pip)"
    )
    p.add_argument(
        "--timeout", type=positive_int, default=300, help="seconds to wait for ready (300)"
    )
    p.add_argument(
        "--prepare", action="store_true", help="only get the server and make its Python "
        "environment (in $LBNET_TRITON_DIR, else the cache), e.g. while online",
    )  # fmt: skip
    p.set_defaults(func=run)
