"""`fastgan data ...` sub-commands (also runnable as `python -m fastgan.data ...`).

    download NAME [--data-dir DIR] [--force]     fetch mnist / fashion-mnist into the cache
    info NAME [--data-dir DIR] [--split S] ...   load a data set and print what was found
    where                                         print the folders searched and the cache
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

NAME = "data"
HELP = "dataset utilities: download, info, where (fastgan data -h)"


def add_parser(sub) -> argparse.ArgumentParser:
    """A help-only entry: ``fastgan.cli.main`` hands ``fastgan data ...`` to ``main`` before
    argparse sees it, so its texts are this module's own."""
    return sub.add_parser(NAME, help=HELP, add_help=False)


def run(args) -> int:   # reached only through build_parser() without main's hand-over
    return main([])


def build_parser(prog: str = "fastgan data") -> argparse.ArgumentParser:
    from .errors import OneLineParser
    p = OneLineParser(prog=prog, description="fastgan data sets")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=OneLineParser)
    d = sub.add_parser("download", help="download mnist or fashion-mnist (needs a network)")
    d.add_argument("name", choices=["mnist", "fashion-mnist"])
    d.add_argument("--data-dir", default=None,
                   help="root folder (files go to DIR/NAME); default $FASTGAN_DATA or the cache")
    d.add_argument("--force", action="store_true", help="download even if files are present")
    i = sub.add_parser("info", help="load a data set and describe it")
    i.add_argument("name", help="mnist, fashion-mnist, demo, digits or folder:PATH")
    i.add_argument("--data-dir", default=None)
    i.add_argument("--split", default="train")
    i.add_argument("--image-size", type=int, default=None)
    i.add_argument("--channels", type=int, default=None, choices=[1, 3])
    i.add_argument("--max-images", type=int, default=None)
    w = sub.add_parser("where", help="show where data files are looked up and cached")
    w.add_argument("--data-dir", default=None)
    return p


def main(argv: Optional[Sequence[str]] = None, prog: str = "fastgan data") -> int:
    from fastgan.data.base import DataError
    args = build_parser(prog).parse_args(argv)
    try:
        if args.cmd == "download":
            from fastgan.data.downloader import download
            print(download(args.name, args.data_dir, force=args.force))
        elif args.cmd == "info":
            from fastgan.data.sources import load_dataset
            ds = load_dataset(args.name, data_dir=args.data_dir, split=args.split,
                              image_size=args.image_size, channels=args.channels,
                              max_images=args.max_images)
            print(ds.describe())
        else:
            from fastgan.data.sources import default_cache_dir, search_dirs
            print(f"cache: {default_cache_dir()}")
            for name in ("mnist", "fashion-mnist"):
                for folder, origin in search_dirs(name, args.data_dir):
                    mark = "exists" if folder.is_dir() else "absent"
                    print(f"{name}: {folder}  ({origin}, {mark})")
    except DataError as e:
        print(f"fastgan: error: {e}", file=sys.stderr)
        return 2
    return 0
