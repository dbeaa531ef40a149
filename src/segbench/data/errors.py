"""The error raised for problems in the user's data."""

from __future__ import annotations

__all__ = ["DatasetError"]


class DatasetError(ValueError):
    """A problem with the user's data; the message lists each file with its problem and the fix.

    Attributes:
        problems: one message per problem, each naming the file and the fix.
    """

    def __init__(self, problems: list[str], header: str = "dataset problems"):
        self.problems = problems
        shown = problems[:50]
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{header} ({len(problems)}):\n  " + "\n  ".join(shown) + more)
