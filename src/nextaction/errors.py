"""Errors that are the user's to fix.

Anything raised as :class:`InputError` is printed by the CLI as one line (no traceback) and exits with
code 2. Everything else is a bug of ours: exit code 1.
"""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """A problem with the user's input: bad file, bad option, bad value.

    The message says what is wrong and what to do. ``path``/``line``/``column`` locate it when known
    and are prefixed to the message as ``path:line: column 'c': …``.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.column = column
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        if self.column is not None:
            where += f"column '{self.column}': "
        return (where + self.message).replace("\n", " ")
