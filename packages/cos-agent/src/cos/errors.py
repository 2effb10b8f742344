"""The one error type of the agent and of the host toolkit (toolkit.errors is this class):
its message is what the user reads, so it names the file, field, image or layer at fault
and what to do about it."""


class CosError(Exception):
    pass
