"""The `lbnet-deploy` command: the sub-commands of `lbnet_deploy.commands`, one line per error.

Every sub-command registers itself (`commands/<name>.py`); this module builds the parser, sets up
logging and signals, and turns the tool's errors into one line and an exit code.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from lbnet_deploy._version import __version__
from lbnet_deploy.errors import LBNetError
from lbnet_deploy.logs import configure_logging


def build_parser() -> argparse.ArgumentParser:
    from lbnet_deploy.commands import register_all

    parser = argparse.ArgumentParser(
        prog="lbnet-deploy", description="Export, verify and run LBNet super-resolution models."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_all(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a container stopping), raised like Ctrl-C so every `finally` and context
    manager removes its temporaries; without a handler Python dies at once, leaving them."""


def _terminate(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up short
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.func
    configure_logging()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return handler(args)
    except LBNetError as exc:
        print(f"lbnet-deploy: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("lbnet-deploy: interrupted", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except OSError as exc:  # e.g. an unwritable output folder: one line, not a traceback
        if os.environ.get("LBNET_DEBUG"):
            raise
        print(f"lbnet-deploy: error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
