"""Bad input: the one exception every door raises, named by file, entry and field.

A door (a reader of documents, predictions, schemas, configs, checkpoints) raises `InputError`
before any Ray start or training; it never prints or exits. The command line turns it into one
message and exit status 2; any other failure is a failure at run time (status 1).
"""
from __future__ import annotations

import json
import os


class InputError(ValueError):
    """What is wrong with an input, and where: file, entry (index and title), field."""

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, index: int | None = None,
                 title: str | None = None, field: str | None = None, what: str = "entry") -> None:
        self.path, self.index, self.title, self.field, self.message, self.what = path, index, title, field, message, what
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [] if self.path is None else [str(self.path)]
        if self.index is not None:
            where.append(f"{self.what} {self.index}" + (f" ({json.dumps(self.title, ensure_ascii=False)})" if self.title is not None else ""))
        elif self.title is not None:
            where.append(f"{self.what} {json.dumps(self.title, ensure_ascii=False)}")
        if self.field:
            where.append(self.field)
        return ": ".join([*where, self.message])


class RunFailed(RuntimeError):
    """A failure at run time that the log above already details (a worker's traceback, printed by
    Ray): the command line ends it with this one line and status 1, not a second traceback."""


def input_error_in(e: BaseException | None) -> InputError | None:
    """The InputError behind `e` (its cause chain, or a Ray task error's `cause`), if any: a
    worker that found bad input says so as the door would have."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, InputError):
            return e
        seen.add(id(e))
        e = getattr(e, "cause", None) or e.__cause__
    return None
