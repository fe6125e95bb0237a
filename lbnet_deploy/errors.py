"""The one exception type users see: the CLI prints its message as a single line and exits 2."""


class LBNetError(Exception):
    """A problem with the user's input (file, option, model) described in one line."""


def first_line(exc: BaseException, width: int = 120) -> str:
    """The first line of a library's exception text, cut to `width`, for a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0][:width] if text else ""
