"""`fastgan train | sample | eval | classifier | doctor | bench | data` — the command line.

One module per command, each with ``NAME``, ``HELP``, ``add_parser(sub)`` and ``run(args)``;
``errors`` holds the one-line failure every command uses.

Bad input ends with one line on stderr and exit code 2; a diverged run with exit code 3; Ctrl-C
(SIGINT) or SIGTERM saves a checkpoint and exits with 130 or 143; a data-parallel run (torchrun)
that stops because another rank failed exits with 4.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from fastgan.env_choices import env_problem

from . import bench, classifier, data, doctor, errors, eval, sample, train

COMMANDS = (train, sample, eval, classifier, doctor, bench, data)   # the order of `fastgan -h`


def build_parser() -> argparse.ArgumentParser:
    p = errors.OneLineParser(prog="fastgan", description="Train GANs fast on NVIDIA GPUs.")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=errors.OneLineParser)
    for cmd in COMMANDS:
        cmd.add_parser(sub).set_defaults(fn=cmd.run)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The data commands parse their own arguments: a nested subparser would change their usage
    # text and the "required: cmd" error.
    if argv[:1] == [data.NAME]:
        return data.main(argv[1:])
    try:
        p = build_parser()
        a, extra = p.parse_known_args(argv)   # -h and bad input: SystemExit, as argparse's
        if extra:   # named by the command's own options (argparse would name `fastgan -h`)
            cmd = getattr(a, "cmd", None)
            after = cmd in argv and extra[0] in argv and argv.index(cmd) < argv.index(extra[0])
            where = f"fastgan {cmd} -h" if cmd and after else "fastgan -h"
            return errors.fail(f"unrecognized arguments: {' '.join(extra)}; see '{where}'")
        if not getattr(a, "fn", None):
            p.print_help()
            return 2
        problem = env_problem()
        if problem:   # before any work: a typo never runs on a default or without a backend
            return errors.fail(problem)
        return a.fn(a)
    except KeyboardInterrupt:   # Ctrl-C while importing or loading: one line, not a traceback
        print("fastgan: interrupted", file=sys.stderr)
        return 130
