"""The one exception type users see: the CLI prints its message as a single line and exits 2."""


class LBNetError(Exception):
    """A problem with the user's input (file, option, model) described in one line."""
