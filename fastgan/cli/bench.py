"""`fastgan bench`: the benchmark matrix on this machine, printed as a table and written as JSON.

    fastgan bench                          every variant × batch × path (GPU: minutes to an hour)
    fastgan bench --quick                  the quick matrix (GPU: ~5 min; CPU: tiny, seconds)
    fastgan bench --variant mlp --batch-size 64 --batch-size 1024 --paths 'eager-*,fastgan-*'
    fastgan bench --quick --json out.json --md out.md
    fastgan bench --gpu-check --jsonl rows.jsonl   make gpu-check's order, each row as it comes

Without --json the results go to ./fastgan-bench-<date>-<gpu>.json. The run's total time budget
is FASTGAN_BENCH_BUDGET_S seconds (quick default 420 on a GPU); rows that do not fit are listed
as "skipped: budget". Exit codes: 0 ran (failed paths are rows of the table, with their error),
2 bad arguments.
"""
from __future__ import annotations

import argparse
import os
import sys

from .errors import fail, missing_folder

NAME = "bench"
HELP = "iterations/s of fastgan vs eager PyTorch and torch.compile"


def add_parser(sub) -> argparse.ArgumentParser:
    b = sub.add_parser(NAME, help=HELP)
    b.add_argument("--variant", action="append", help="repeatable; default all")
    b.add_argument("--quick", action="store_true", help="fewer sizes and repetitions")
    b.add_argument("--batch-size", type=int, action="append")
    b.add_argument("--device")
    b.add_argument("--json", help="write results to this JSON file")
    b.add_argument("--md", help="write the table to this markdown file")
    b.add_argument("--paths", help="comma-separated subset of paths to run")
    b.add_argument("--gpu-check", action="store_true",
                   help="the quick matrix in make gpu-check's order (seed batches, then the "
                        "compiled rivals, then dcgan's precisions, then the rest)")
    b.add_argument("--jsonl", help="append each row to this JSON-lines file as it is measured")
    return b


def run(args) -> int:
    import torch

    from fastgan.benchmark import (append_jsonl, make_config, run_matrix, to_markdown,
                                   write_json, write_markdown)

    device = getattr(args, "device", None)
    if device not in (None, "auto"):
        if device != "cpu" and not device.startswith("cuda"):
            return fail(f"unknown device {device!r}; use cpu or cuda")
        if device.startswith("cuda") and not torch.cuda.is_available():
            return fail("--device cuda was asked for but no CUDA GPU is available "
                         f"(torch {torch.__version__}); use --device cpu")
    else:
        device = None
    try:
        cfg = make_config(device=device, quick=bool(getattr(args, "quick", False)),
                          variants=getattr(args, "variant", None),
                          batch_sizes=getattr(args, "batch_size", None),
                          paths=getattr(args, "paths", None),
                          gpu_check=bool(getattr(args, "gpu_check", False)))
        from fastgan.benchmark import plan
        items = plan(cfg)   # checks --paths before anything runs
    except ValueError as e:
        return fail(str(e))
    if not items:
        return fail("nothing to run")

    json_path = getattr(args, "json", None)
    md_path = getattr(args, "md", None)
    if not json_path:
        from fastgan.benchmark import gpu_slug
        import datetime
        slug = gpu_slug() if cfg.device.startswith("cuda") else "cpu"
        json_path = f"fastgan-bench-{datetime.date.today().isoformat()}-{slug}.json"

    jsonl_path = getattr(args, "jsonl", None)
    for opt, path in (("--json", json_path), ("--md", md_path), ("--jsonl", jsonl_path)):
        if problem := missing_folder(opt, path):
            return fail(problem)

    def on_update(doc):
        write_json(doc, json_path)
        if md_path:
            write_markdown(doc, md_path)

    def on_row(row):
        if jsonl_path:
            append_jsonl(jsonl_path, {"step": "bench", **row})

    n_run = sum(1 for i in items if not i.skip)
    budget = cfg.total_budget_s
    print(f"fastgan bench: {len(items)} rows ({n_run} to measure) on {cfg.device}"
          f"{' (quick)' if cfg.quick else ''}"
          f"{'' if budget == float('inf') else f', budget {budget:.0f} s'}; "
          f"results -> {json_path}" + (f", {md_path}" if md_path else ""),
          file=sys.stderr, flush=True)
    try:
        doc = run_matrix(cfg, on_update=on_update, on_row=on_row)
    except RuntimeError as e:
        return fail(str(e))
    except KeyboardInterrupt:
        print(f"fastgan bench: interrupted; partial results in {json_path}", file=sys.stderr)
        return 130
    print(to_markdown(doc))
    print(f"fastgan bench: wrote {os.path.abspath(json_path)}"
          + (f" and {os.path.abspath(md_path)}" if md_path else ""), file=sys.stderr)
    return 0
