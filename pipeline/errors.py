"""The one exception type users see: its message is a single line naming the file or key at fault."""


class WherefromError(Exception):
    """Bad input or a failed precondition; the CLI prints it as one line and exits non-zero."""
