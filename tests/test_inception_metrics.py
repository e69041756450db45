"""Standard FID/KID and precision/recall: the distances against independent formulas and on known
distributions, the InceptionV3 weights file (read as data, refused with one line when it is not
the network's), and `fastgan eval` / `train --eval-every` with --inception-weights on gray and
colour runs (a randomly initialised network saved in the weights file's format: conftest)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fastgan.cli import main as cli_main
from fastgan.quality import distances as D
from fastgan.quality import inception as I
from fastgan.quality import metrics as Q
from run_stubs import BankG, StubVariant


@pytest.fixture(autouse=True)
def _stats_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGAN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(I.ENV, raising=False)


# ---- the distances ------------------------------------------------------------------------

def _kid_loops(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written out pair by pair."""
    m, d = len(x), x.shape[1]
    k = lambda a, b: (float(np.dot(a, b)) / d + 1) ** 3     # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


@pytest.mark.parametrize("m,d", [(7, 3), (30, 16)])
def test_kid_matches_pairwise_formula(m, d):
    g = torch.Generator().manual_seed(m)
    x, y = torch.randn(m, d, generator=g), torch.randn(m, d, generator=g) * 1.3 + 0.2
    got, std, size = D.kid(x, y, subsets=1, subset_size=m)     # one subset: every sample
    assert size == m and std == 0
    assert got == pytest.approx(_kid_loops(x.double().numpy(), y.double().numpy()), rel=1e-10)


def test_kid_on_known_distributions():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(600, 8, generator=g), torch.randn(600, 8, generator=g)
    same, same_std, _ = D.kid(a, b, subsets=20, subset_size=200)
    assert abs(same) < 3 * same_std + 1e-3           # unbiased: ~0, either sign
    shifts = [D.kid(a, b + s, subsets=20, subset_size=200)[0] for s in (0.5, 1.0, 2.0)]
    assert shifts[0] > 5 * same_std and shifts[0] < shifts[1] < shifts[2]
    # fewer samples than the subset size: the subset shrinks to fit
    assert D.kid(a[:50], b[:40], subsets=3)[2] == 40
    with pytest.raises(ValueError):
        D.kid(a[:1], b[:1])


def _pr_loops(real, fake, k):
    def radii(x):
        dd = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        return np.sort(dd, axis=1)[:, k]          # column 0 is the point itself

    def covered(q, ref, r):
        dd = ((q[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
        return float(np.mean([(dd[i] <= r).any() for i in range(len(q))]))
    return covered(fake, real, radii(real)), covered(real, fake, radii(fake))


@pytest.mark.parametrize("k", [1, 3])
def test_precision_recall_matches_brute_force(k):
    g = np.random.default_rng(k)
    real, fake = g.normal(size=(80, 5)), g.normal(0.7, 1.2, size=(65, 5))
    want = _pr_loops(real, fake, k)
    got = D.precision_recall(torch.tensor(real), torch.tensor(fake), k=k, chunk=17)
    assert got == pytest.approx(want, abs=1e-12)
    assert 0 < want[0] < 1 and 0 < want[1] < 1      # the case tells the two apart


def test_precision_recall_on_known_distributions():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(1000, 4, generator=g)
    p, r = D.precision_recall(real, torch.randn(1000, 4, generator=g))
    assert p > 0.9 and r > 0.9                        # the same distribution
    collapsed = real[real.norm(dim=1) < 0.7][:200]    # real samples of one region: realistic
    p, r = D.precision_recall(real, collapsed)        # but covering little
    assert p == 1.0 and r < 0.5
    assert D.precision_recall(real, real + 100.0) == (0.0, 0.0)


def test_frechet_distance_matches_pytorch_fid_and_closed_form():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(400, 12, generator=g), torch.randn(300, 12, generator=g) @ torch.randn(
        12, 12, generator=g) * 0.3 + 1
    (mu1, c1), (mu2, c2) = D.mean_cov(a), D.mean_cov(b)
    torch.testing.assert_close(c1, torch.cov(a.double().T))
    got = D.frechet_distance(mu1, c1, mu2, c2)
    assert got > 1
    # commuting (diagonal) covariances: |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2
    s1, s2 = (torch.rand(6, generator=g, dtype=torch.float64) + 0.1 for _ in range(2))
    want = (mu1[:6] - mu2[:6]).square().sum() + (s1.sqrt() - s2.sqrt()).square().sum()
    assert D.frechet_distance(mu1[:6], s1.diag(), mu2[:6], s2.diag()) == pytest.approx(
        float(want), rel=1e-10)


def test_frechet_distance_matches_pytorch_fids_scipy_formula():
    fid_score = pytest.importorskip("pytorch_fid.fid_score")       # scipy's sqrtm
    g = torch.Generator().manual_seed(6)
    a = torch.randn(500, 20, generator=g)
    b = torch.randn(400, 20, generator=g) @ torch.randn(20, 20, generator=g) * 0.4 + 0.5
    (mu1, c1), (mu2, c2) = D.mean_cov(a), D.mean_cov(b)
    want = fid_score.calculate_frechet_distance(mu1.numpy(), c1.numpy(), mu2.numpy(), c2.numpy())
    assert D.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(want, rel=1e-8)


# ---- the weights file -----------------------------------------------------------------------

def test_features_of_gray_colour_and_any_size(inception_weights):
    net = I.load_inception(inception_weights, "cpu")
    assert not net.standard and net.dim == 2048
    assert I.load_inception(inception_weights, "cpu") is net          # built once
    g = torch.Generator().manual_seed(0)
    gray = torch.rand(3, 1, 28, 28, generator=g)
    f = net.features(gray)
    assert f.shape == (3, 2048) and torch.isfinite(f).all() and f.std() > 0
    torch.testing.assert_close(f, net.features(gray.expand(-1, 3, -1, -1)))
    assert net.features(torch.rand(2, 3, 45, 61, generator=g)).shape == (2, 2048)
    assert not torch.allclose(f[0], f[1])
    with pytest.raises(ValueError, match="1- or 3-channel"):
        net.features(torch.rand(1, 4, 32, 32))


def test_legacy_format_and_missing_batch_counters_load(inception_weights, tmp_path):
    state = torch.load(inception_weights, weights_only=True)
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "legacy.pth"
    torch.save(old, path, _use_new_zipfile_serialization=False)
    x = torch.rand(2, 1, 40, 40)
    torch.testing.assert_close(I.load_inception(path, "cpu").features(x),
                               I.load_inception(inception_weights, "cpu").features(x))


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("case", ["missing", "payload", "garbage", "classifier", "one-tensor"])
def test_bad_weights_are_one_line_and_never_run(case, tmp_path, inception_weights):
    path, marker = tmp_path / "w.pth", tmp_path / "PWNED"
    if case == "payload":
        torch.save({"x": Payload(marker)}, path)
    elif case == "garbage":
        path.write_bytes(b"not a weights file")
    elif case == "classifier":
        from fastgan.quality.classifier import WEIGHTS_FILE
        path = WEIGHTS_FILE
    elif case == "one-tensor":
        state = torch.load(inception_weights, weights_only=True)
        k = next(k for k in state if k.endswith("conv.weight"))
        state[k] = state[k][:1]
        torch.save(state, path)
    with pytest.raises(I.InceptionError) as e:
        I.load_inception(I.weights_path(str(path)), "cpu")
    msg = str(e.value)
    assert "\n" not in msg and I.FILE_NAME in msg and (case != "missing" or I.URL in msg)
    assert not marker.exists()


def test_environment_variable_and_standard_digest(inception_weights, monkeypatch):
    assert I.weights_path(None) is None
    monkeypatch.setenv(I.ENV, str(inception_weights))
    assert I.weights_path(None) == inception_weights
    monkeypatch.setattr(I, "STANDARD_SHA256_PREFIX", I._digest(inception_weights)[:8])
    assert I.InceptionFeatures(inception_weights, "cpu").standard


def test_without_pytorch_fid_one_line_names_the_extra(inception_weights, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "pytorch_fid.inception", None)
    with pytest.raises(I.InceptionError, match=r"pip install 'fastgan\[fid\]'"):
        I.InceptionFeatures(inception_weights, "cpu")


# ---- eval and train, end to end -------------------------------------------------------------

def _train(tmp_path, name, *extra):
    out = tmp_path / name
    rc = cli_main(["train", "--device", "cpu", "--backend", "reference", "--out", str(out),
                   "--log-every", "1", "--sample-every", "0", "--checkpoint-every", "0",
                   "--quiet", *extra])
    return rc, out


def _faces(tmp_path, n=12, size=32):
    image = pytest.importorskip("PIL.Image")
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(n):
        image.fromarray(np.random.default_rng(i).integers(0, 255, (size, size, 3), np.uint8)
                        ).save(folder / f"{i}.png")
    return folder


def test_eval_gray_run_both_feature_spaces(tmp_path, capsys, make_idx_dataset, inception_weights,
                                           monkeypatch):
    rc, out = _train(tmp_path, "mlp", "--data-dir", make_idx_dataset(40), "--steps", "1")
    assert rc == 0, capsys.readouterr().err
    js = tmp_path / "m.json"
    args = ["eval", "--checkpoint", str(out), "--n", "20", "--device", "cpu",
            "--inception-weights", str(inception_weights), "--json", str(js)]
    assert cli_main(args) == 0, capsys.readouterr().err
    m = json.loads(js.read_text())
    for k in ("fid", "kid", "kid_std", "precision", "recall", "confident", "inception_fid",
              "inception_kid", "inception_kid_std", "inception_precision", "inception_recall"):
        assert isinstance(m[k], (int, float)) and math.isfinite(m[k]), k
    assert m["inception_fid"] > 0 and m["inception_standard"] is False
    assert m["kid_subset"] == m["inception_kid_subset"] == 20
    line = capsys.readouterr().out
    assert "FID-MNIST" in line and "| FID " in line and "non-standard" in line
    # the real side's Inception features are cached: a second evaluation does not featurize them

    def boom(*a, **k):
        raise AssertionError("real images featurized again")
    monkeypatch.setattr(Q, "featurize_inception", boom)
    assert cli_main(args) == 0
    assert json.loads(js.read_text())["inception_fid"] == pytest.approx(m["inception_fid"])


def test_colour_run_eval_every_and_eval(tmp_path, capsys, inception_weights):
    folder = _faces(tmp_path)
    common = ["--variant", "dcgan", "--dataset", f"folder:{folder}", "--image-size", "32",
              "--batch-size", "4", "--n-samples", "4"]
    # without weights: one line naming the file, its address and the option; nothing written
    rc, out = _train(tmp_path, "none", *common, "--steps", "1", "--eval-every", "1")
    err = capsys.readouterr().err
    assert rc == 2 and I.URL in err and "--inception-weights" in err and not out.exists()
    rc, out = _train(tmp_path, "dc", *common, "--steps", "2", "--eval-every", "2", "--eval-n",
                     "10", "--inception-weights", str(inception_weights))
    assert rc == 0, capsys.readouterr().err
    (row,) = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert row["step"] == 2 and math.isfinite(row["inception_fid"]) and "fid" not in row
    assert row["inception_weights"] == str(inception_weights.resolve())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["inception_weights"] == str(inception_weights.resolve())
    capsys.readouterr()
    # eval: the weights the run's evaluations used, unless given
    js = tmp_path / "m.json"
    assert cli_main(["eval", "--checkpoint", str(out), "--n", "10", "--device", "cpu",
                     "--json", str(js)]) == 0, capsys.readouterr().err
    line = capsys.readouterr().out
    assert "FID " in line and "FID-MNIST" not in line and "class histogram" not in line
    assert json.loads(js.read_text())["inception_weights"] == str(inception_weights.resolve())
    # a colour run without evaluations: eval says where the weights come from
    rc, plain = _train(tmp_path, "plain", *common, "--steps", "1")
    assert rc == 0
    capsys.readouterr()
    assert cli_main(["eval", "--checkpoint", str(plain), "--n", "10", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert I.FILE_NAME in err and I.URL in err and len(err.strip().splitlines()) == 1
    assert cli_main(["eval", "--checkpoint", str(plain), "--n", "10", "--device", "cpu",
                     "--inception-weights", str(inception_weights)]) == 0


def test_real_feature_rows_are_capped(monkeypatch):
    monkeypatch.setattr(Q, "REAL_FEATURES", 30)
    imgs = torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8)
    st = Q.real_stats(imgs, "cpu")
    assert st["feats"].shape == (30, 128) and st["n"] == 50
    full = Q.featurize(imgs, "cpu").mean_cov()
    torch.testing.assert_close(st["mu"], full[0])     # the mean of every image, not the subset
    every = Q.featurize(imgs, "cpu", keep=50).features()
    # a random subset of the images' rows, not the first 30
    assert all((every == row).all(1).any() for row in st["feats"])
    assert not torch.equal(st["feats"], every[:30])


@pytest.mark.gpu
def test_features_and_distances_on_cuda_match_cpu(inception_weights):
    """The evaluation runs on the training device: the same features (full float32, TF32 off)
    and the same float64 distances there."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 3, 64, 64, generator=g)
    cpu = I.load_inception(inception_weights, "cpu").features(x)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        cuda = I.load_inception(inception_weights, "cuda").features(x.cuda())
        assert torch.backends.cudnn.allow_tf32      # restored after the features
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-3, atol=1e-3 * cpu.abs().max().item())
    a, b = torch.randn(300, 64, generator=g), torch.randn(200, 64, generator=g) + 0.3
    assert D.kid(a.cuda(), b.cuda(), subsets=5, subset_size=100)[0] == pytest.approx(
        D.kid(a, b, subsets=5, subset_size=100)[0], rel=1e-9)
    assert D.precision_recall(a.cuda(), b.cuda()) == D.precision_recall(a, b)


@pytest.mark.parametrize("channels", [1, 3])
def test_real_images_as_samples_score_as_real(channels, inception_weights):
    """Both sides preprocessed alike: the real images themselves, as generated samples, give
    FID ~ 0 and precision = recall = 1; shifted colours do not."""
    g = torch.Generator().manual_seed(channels)
    imgs = torch.randint(0, 256, (24, channels, 36, 36), dtype=torch.uint8, generator=g)
    net = I.load_inception(inception_weights, "cpu")
    real = Q.real_stats(imgs, "cpu", inception=net)
    m = Q.evaluate_generator(StubVariant(), {"G": BankG(imgs)}, real, n=24, inception=net)
    assert m["inception_fid"] < 1e-6 * m["inception_fid"] + 1e-3, m["inception_fid"]
    assert m["inception_precision"] == m["inception_recall"] == 1.0 and m["inception_pr_n"] == 24
    assert ("fid" in m) == (channels == 1)
    dark = (imgs // 2).clone()
    m2 = Q.evaluate_generator(StubVariant(), {"G": BankG(dark)}, real, n=24, inception=net)
    assert m2["inception_fid"] > 1e3 * max(m["inception_fid"], 1e-3)


def test_too_few_real_images_is_one_line():
    with pytest.raises(Q.QualityError, match="at least 4 real images"):
        Q.real_stats(torch.zeros(3, 1, 28, 28, dtype=torch.uint8), "cpu")


def test_weights_from_the_environment_and_a_resumed_run_whose_file_is_gone(
        tmp_path, capsys, make_idx_dataset, inception_weights, monkeypatch):
    import shutil
    mine = tmp_path / "w.pth"
    shutil.copy(inception_weights, mine)
    monkeypatch.setenv(I.ENV, str(mine))
    data = make_idx_dataset(40)
    rc, out = _train(tmp_path, "env", "--data-dir", data, "--steps", "2", "--eval-every", "2",
                     "--eval-n", "10", "--checkpoint-every", "2")
    assert rc == 0, capsys.readouterr().err
    (row,) = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert row["inception_weights"] == str(mine.resolve()) and "inception_fid" in row
    assert json.loads((out / "config.json").read_text())["inception_weights"] == str(mine.resolve())
    monkeypatch.delenv(I.ENV)
    mine.unlink()
    capsys.readouterr()
    rc = cli_main(["train", "--resume", str(out), "--steps", "4", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "the resumed run's" in err and "no such file" in err
    assert len(err.strip().splitlines()) == 1
    # eval: the run's file is gone: a note, then the digit metrics alone (1-channel data)
    assert cli_main(["eval", "--checkpoint", str(out), "--n", "10", "--device", "cpu"]) == 0
    cap = capsys.readouterr()
    assert "is gone" in cap.err and "FID-MNIST" in cap.out and "| FID " not in cap.out
