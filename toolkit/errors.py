"""One exception type for every user-facing failure: its message is what the user reads."""


class CosError(Exception):
    """A failure with a message that names the file, field or value at fault."""
