"""Compare two FASTGAN_PARITY_LOG files (or two ``pytest --collect-only -q`` listings) across a
move of the parity tests: every old test id is mapped to its new one, and the records (name,
rel_err, tol) of each test must be equal, in order.

    python tests/ops/parity_compare.py OLD.jsonl NEW.jsonl
    python tests/ops/parity_compare.py --ids OLD.txt NEW.txt

The ids differ in the file, in a ``backend`` parameter added to each id, and in the parameters'
order; a test is keyed by its function (renamed below where two old files used the same name)
and the multiset of its id's parameter tokens without the backend.
"""
from __future__ import annotations

import collections
import json
import sys

# tests/test_cuda_ext_ops.py and tests/test_triton_ops.py (before issue 19) -> tests/ops,
# tests/backends: the functions whose name changed (the cuda file's, where the Triton file had
# the same name).
RENAMED = {
    ("test_cuda_ext_ops.py", "test_bias_act"): "test_bias_act_dtypes",
    ("test_cuda_ext_ops.py", "test_bias_act_no_bias"): "test_bias_act_no_bias_and_identity",
    ("test_cuda_ext_ops.py", "test_bn_act_eval"): "test_bn_act_eval_dtypes",
    ("test_cuda_ext_ops.py", "test_gan_loss"): "test_gan_loss_dtypes",
}


def key(test_id: str, old: bool):
    path, _, rest = test_id.partition("::")
    fname = path.rsplit("/", 1)[-1]
    func, _, params = rest.partition("[")
    tokens = params.rstrip("]").split("-") if params else []
    if old:
        func = RENAMED.get((fname, func), func)
    elif "triton" in tokens:        # the new ids carry the backend as a token of its own
        tokens.remove("triton")
    elif "cuda" in tokens:
        tokens.remove("cuda")
    return func, tuple(sorted(tokens))


def load_log(path, old):
    out = collections.defaultdict(list)
    for line in open(path):
        r = json.loads(line)
        out[key(r["test"], old)].append((r["name"], r["rel_err"], r["tol"]))
    return out


def load_ids(path, old):
    ids = [ln.strip() for ln in open(path) if "::" in ln]
    return collections.Counter(key(i, old) for i in ids)


def main(argv):
    if argv[0] == "--ids":
        a, b = load_ids(argv[1], True), load_ids(argv[2], False)
        missing, extra = a - b, b - a
        print(f"old {sum(a.values())} ids, new {sum(b.values())}; "
              f"unmatched old {sum(missing.values())}, unmatched new {sum(extra.values())}")
        for k in list(missing)[:20]:
            print("  old only:", k)
        for k in list(extra)[:20]:
            print("  new only:", k)
        return 1 if missing or extra else 0
    a, b = load_log(argv[0], True), load_log(argv[1], False)
    n = sum(map(len, a.values()))
    bad = [k for k in set(a) | set(b) if a.get(k) != b.get(k)]
    print(f"old {n} records in {len(a)} tests, new {sum(map(len, b.values()))} in {len(b)}; "
          f"tests differing: {len(bad)}")
    for k in bad[:20]:
        print("  ", k, a.get(k, [])[:3], b.get(k, [])[:3])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
