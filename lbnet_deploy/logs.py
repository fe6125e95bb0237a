"""How the tool's library messages reach a person: the `lbnet_deploy` logger's one stderr
handler. Library modules only call `logging.getLogger("lbnet_deploy")`; the command-line entry
points (`lbnet-deploy`, `python -m lbnet_deploy.benchmarks.cli`) call `configure_logging`."""

from __future__ import annotations

import logging
import sys


class _CliFormat(logging.Formatter):
    """Library messages as the tool has always printed them: progress as is, problems as
    `lbnet-deploy: warning: ...` / `lbnet-deploy: error: ...` (one line each)."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"lbnet-deploy: {record.levelname.lower()}: {text}"
        return text


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (redirected by tests, wrappers)."""

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def configure_logging(level: int = logging.INFO) -> None:
    """The `lbnet_deploy` logger's one stderr handler (library modules only log)."""
    log = logging.getLogger("lbnet_deploy")
    if not any(isinstance(h, _Stderr) for h in log.handlers):
        handler = _Stderr()
        handler.setFormatter(_CliFormat())
        log.addHandler(handler)
    log.setLevel(level)
