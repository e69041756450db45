"""How a command reports bad input: one line on stderr and exit code 2. Imports nothing of
``fastgan.cli``, so command modules and libraries can use it without a cycle."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional


def missing_folder(opt: str, path: Optional[str]) -> Optional[str]:
    """The error for an output file whose folder does not exist (checked before the work that
    would end in writing it), or None."""
    if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        return f"{opt} {path}: its folder does not exist; create it or pass another path"
    return None


def fail(msg: str, detail: Optional[str] = None, verbose: bool = False) -> int:
    """One line; the underlying library's own text (e.g. PyTorch's zip errors) only with
    --verbose, on a second line."""
    print(f"fastgan: error: {msg}", file=sys.stderr)
    if verbose and detail:
        print(f"fastgan: detail: {' '.join(str(detail).split())}", file=sys.stderr)
    return 2


def fail_from(e: BaseException, a) -> int:
    return fail(str(e), getattr(e, "detail", None), bool(getattr(a, "verbose", False)))


class OneLineParser(argparse.ArgumentParser):
    """argparse's errors as :func:`fail`'s one line (its usage block would bury them): what is
    wrong and where the options are listed; exit code 2 as argparse's."""

    def error(self, message: str):
        self.exit(2, f"fastgan: error: {message}; see '{self.prog} -h'\n")
