"""One exception type for every user-facing failure: its message is what the user reads.

It is the agent's own class (cos.errors), so format code shared with machines (OCI,
registry pulls, signatures) raises the same error on either side."""

from cos.errors import CosError

__all__ = ["CosError"]
