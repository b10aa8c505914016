"""The one exception type users see: its message is a single line naming the file or key at fault."""


class WherefromError(Exception):
    """Bad input or a failed precondition; the CLI prints it as one line and exits non-zero."""


class ParamsError(WherefromError):
    """A params value that cannot work, found by a stage; its message starts with the key. The CLI puts
    the params file it was given (``--params``) in front."""
