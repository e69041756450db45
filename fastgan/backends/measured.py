"""``--backend auto`` from measurements: per device, mode (CUDA graph or eager) and variant, the
backends fastest first, as ``fastgan bench`` measured them at each variant's seed batch.

The table is ``measured.json`` beside this module, written from committed benchmark results
(``bench/results/*.json``) by::

    python -m fastgan.backends.measured bench/results/A.json [B.json ...]

and held equal to them by tests/test_auto_measured.py, so it cannot drift from the numbers it
quotes. A device is a GPU's name (``torch.cuda.get_device_name``) or ``cpu``. A GPU that was
never measured takes the measurements of the newest GPU that was (said as such by `fastgan
doctor`); a backend that failed or was not run in the measurement comes after those that ran,
in the catalogue's order. Backends within the measurement's spread of the fastest among them (at
least 2 % on a GPU, 10 % on a CPU, whose runs vary by that much) keep the catalogue's order.
Without a variant, or without any measurement of the device type, auto uses the catalogue's
order (fastgan/backends/__init__.py). Every CPU shares the one ``cpu`` entry, named by the
machine that measured it.

This module imports neither torch nor a backend.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "measured.json")
# percent: closer than this (or the rows' spread) is a tie. A CPU's rows vary by about 10 %
# between runs (README), a GPU's by a few percent.
MIN_TIE = {"cuda": 2.0, "cpu": 10.0}


@functools.lru_cache(maxsize=None)
def table() -> Dict[str, dict]:
    """{device: {"type", "source", "date", "graph": {variant: [...]}, "eager": {...}}}."""
    try:
        with open(TABLE) as f:
            return json.load(f)["devices"]
    except (OSError, ValueError, KeyError):   # an install without the table: catalogue order
        return {}


def _entry(device_type: str, device_name: Optional[str]) -> Tuple[Optional[str], Optional[dict]]:
    """(the measured device whose numbers apply, its entry): this device, else the newest one
    of its type; (None, None) when none was measured."""
    devices = table()
    key = "cpu" if device_type == "cpu" else device_name
    if key in devices:
        return key, devices[key]
    same = [(e["date"], k) for k, e in devices.items() if e["type"] == device_type]
    if not same:
        return None, None
    k = max(same)[1]
    return k, devices[k]


def lookup(device_type: str, graph: bool, variant: Optional[str],
           device_name: Optional[str] = None) -> Optional[Tuple[List[str], str]]:
    """(backends fastest first, where that was measured) for the variant on this device in this
    mode, or None (no variant, or nothing measured for it): the caller uses the catalogue's."""
    if not variant:
        return None
    k, e = _entry(device_type, device_name)
    if e is None:
        return None
    order = e.get("graph" if graph and device_type != "cpu" else "eager", {}).get(variant)
    if not order:
        return None
    # every CPU shares one entry: its name says which machine measured it
    here = device_type != "cpu" and k == device_name
    where = (f"measured on {e.get('name', k)}" + ("" if here else ", not this device")
             + f" ({e['source']})")
    return list(order), where


# ------------------------------------------------------------------------- writing the table

def _ranked(rows: Sequence[dict], catalogue: Sequence[str], min_tie: float) -> List[str]:
    """Backends of ``rows`` (one per backend, status ok) fastest first, in clusters: a backend
    within the tie (``min_tie`` percent, or the rows' spread if larger) of its cluster's
    fastest joins that cluster, whose members keep the catalogue's order; the catalogue's
    backends not in ``rows`` come after them."""
    fastest = sorted(rows, key=lambda r: -r["it_s"])
    order: List[str] = []
    while fastest:
        head = fastest[0]
        def close(r):
            tie = max(min_tie, head.get("spread_pct") or 0.0, r.get("spread_pct") or 0.0)
            return r["it_s"] * (1 + tie / 100) >= head["it_s"]
        cluster = [r for r in fastest if close(r)]
        order += sorted((r["backend"] for r in cluster), key=list(catalogue).index)
        fastest = [r for r in fastest if r not in cluster]
    return order + [b for b in catalogue if b not in order]


def derive(results: dict, seed_batch: Dict[str, int]) -> dict:
    """The table's entry of one ``fastgan bench`` results file (its fp32 rows at each variant's
    seed batch), among the backends the catalogue lets auto pick on the device in each mode."""
    from fastgan import backends
    dev_type = results["env"]["device"]
    out = {"type": dev_type, "date": results["date"], "graph": {}, "eager": {},
           "name": results["env"].get("device_name") or dev_type}
    for variant, batch in seed_batch.items():
        rows = [r for r in results["results"] if r["variant"] == variant and r["batch"] == batch
                and r.get("precision", "fp32") == "fp32" and r["kind"].startswith("fastgan")
                and r["status"] == "ok" and r.get("it_s") and not r.get("overrides")]
        for mode, graph in (("graph", True), ("eager", False)):
            if mode == "graph" and dev_type == "cpu":
                continue
            catalogue = backends.auto_order(dev_type, graph=graph)
            ok = [r for r in rows if bool(r.get("graph")) == graph and r["backend"] in catalogue]
            if ok:
                out[mode][variant] = _ranked(ok, catalogue, MIN_TIE.get(dev_type, 2.0))
    return out


def build(paths: Iterable[str]) -> dict:
    """The whole table from results files; a later file of the same device replaces an
    earlier one's variants."""
    from fastgan.variants import VARIANTS
    seed_batch = {name: v.hyper.batch_size for name, v in VARIANTS.items()}
    devices: Dict[str, dict] = {}
    for p in sorted(paths, key=os.path.basename):   # dated names: oldest first
        with open(p) as f:
            res = json.load(f)
        if not str(res.get("schema", "")).startswith("fastgan-bench/"):
            continue   # e.g. the per-op benchmark's files
        e = derive(res, seed_batch)
        if not (e["graph"] or e["eager"]):
            continue
        key = "cpu" if e["type"] == "cpu" else res["env"]["device_name"]
        old = devices.get(key, {"graph": {}, "eager": {}, "source": ""})
        e["graph"], e["eager"] = {**old["graph"], **e["graph"]}, {**old["eager"], **e["eager"]}
        e["source"] = ", ".join(filter(None, [old["source"],
                                              "bench/results/" + os.path.basename(p)]))
        devices[key] = e
    return {"written_by": "python -m fastgan.backends.measured", "devices": devices}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fastgan.backends.measured",
                                 description="write --backend auto's table from bench results")
    ap.add_argument("results", nargs="+", help="fastgan bench results (.json)")
    ap.add_argument("--out", default=TABLE)
    a = ap.parse_args(argv)
    with open(a.out, "w") as f:
        json.dump(build(a.results), f, indent=1, sort_keys=True)
        f.write("\n")
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
