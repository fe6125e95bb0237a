"""`lbnet-deploy bench`: its many options live with the bench itself (benchmarks/cli.py), which
also runs alone (`python -m lbnet_deploy.benchmarks.cli`)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from lbnet_deploy.benchmarks.cli import add_bench_parser

    add_bench_parser(sub)
