"""`fastgan train --config FILE`: a new run from a saved run's config.json, the options typed on
the command line (and only those) overriding it; bad files are one line, exit 2, nothing
written."""
from __future__ import annotations

import json

import pytest

from fastgan.cli import main

# What each run records about itself, not a setting it was given.
OWN = {"out", "time"}


@pytest.fixture
def data_dir(make_idx_dataset):
    return make_idx_dataset(64, seed=3)


def base_args(data_dir, out, *extra):
    return ["train", "--data-dir", data_dir, "--out", str(out), "--device", "cpu", "--quiet",
            *extra]


def one_error_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("fastgan: error: ") and "Traceback" not in err
    return lines[0]


def test_round_trip_with_one_override(data_dir, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    # Settings off their defaults, among them options whose argparse default is not None
    # (--data-on, --no-tf32, --dist-timeout, --graph-unroll): those defaults must not override
    # the file when the option is not typed again.
    rc = main(base_args(data_dir, a, "--backend", "reference", "--steps", "2", "--batch-size",
                        "8", "--lr-d", "0.0003", "--seed", "5", "--log-every", "1",
                        "--n-samples", "4", "--data-on", "host", "--no-tf32",
                        "--dist-timeout", "77", "--graph-unroll", "2", "--label-smoothing",
                        "0.1"))
    assert rc == 0, capsys.readouterr().err
    saved = json.loads((a / "config.json").read_text())
    # --data-on typed with its argparse default still overrides the file's value.
    rc = main(["train", "--config", str(a / "config.json"), "--out", str(b), "--device", "cpu",
               "--steps", "3", "--data-on", "auto"])
    assert rc == 0, capsys.readouterr().err
    new = json.loads((b / "config.json").read_text())
    assert new["steps"] == 3 and new["data_on"] == "auto"
    assert new["out"] == str(b) and new["resume"] is None
    assert saved["quiet"] is True and new["quiet"] is False     # not taken from the file
    # The CPU threads are chosen anew by each process from the cores free at its start (--threads
    # decides): the saved run's choice is not a setting (the two runs here can see other loads).
    assert new["threads_reason"] and "--threads" not in new["threads_reason"]
    for k in set(saved) - OWN - {"steps", "data_on", "quiet", "threads", "threads_reason",
                                 "threads_adapt"}:
        assert new[k] == saved[k], k
    assert (new["lr_d"], new["seed"], new["tf32"], new["dist_timeout"], new["graph_unroll"],
            new["batch_size"]) == (0.0003, 5, False, 77.0, 2, 8)
    assert len((b / "metrics.jsonl").read_text().splitlines()) == 3


def test_variant_options_per_key_and_the_total(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"variant": "dcgan", "image_size": 32, "variant_options":
                               {"ngf": 8, "ndf": 8}, "steps": 1, "batch_size": 4,
                               "backend": "reference", "n_samples": 4}))
    captured = {}

    def fake_train(c):      # the effective config, without training
        captured.update(c.to_dict())
        raise KeyboardInterrupt
    monkeypatch.setattr("fastgan.engine.train", fake_train)
    rc = main(["train", "--config", str(cfg), "--ngf", "16", "--device", "cpu",
               "--out", str(tmp_path / "r"), "--epochs", "0.5"])
    assert rc == 130, capsys.readouterr().err
    assert captured["variant_options"] == {"ngf": 16, "ndf": 8}
    assert (captured["variant"], captured["image_size"]) == ("dcgan", 32)
    # --steps and --epochs are one setting (the total): the typed --epochs replaces the file's
    # --steps, which would otherwise win
    assert (captured["steps"], captured["epochs"]) == (None, 0.5)
    assert captured["device"] == "cpu"      # from the command line, never from the file
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("content,needle", [
    (None, "cannot read it"),
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not a text file"),
    (b"[1, 2]", "expected a JSON object"),
    (b'{"steps": 2, "stepz": 3}', "unknown setting(s) 'stepz'"),
    (b'{"steps": "2"}', "'steps' must be an integer or null, not \"2\""),
    (b'{"steps": 2.5}', "'steps' must be an integer"),
    (b'{"tf32": 1}', "'tf32' must be true or false, not 1"),
    (b'{"lr_d": true}', "'lr_d' must be a number"),
    (b'{"variant_options": {"ngf": [1]}}', "'variant_options' must be an object"),
    (b'{"variant": "wgan", "steps": 1}', "unknown variant 'wgan'"),   # checked by the run
])
def test_bad_file_one_line_exit_2_nothing_written(data_dir, tmp_path, capsys, content, needle):
    cfg = tmp_path / "config.json"
    if content is not None:
        cfg.write_bytes(content)
    out = tmp_path / "run"
    rc = main(base_args(data_dir, out, "--config", str(cfg)))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert needle in one_error_line(err)
    assert not out.exists()


def test_config_with_resume_is_an_error(data_dir, tmp_path, capsys):
    a = tmp_path / "a"
    assert main(base_args(data_dir, a, "--backend", "reference", "--steps", "1",
                          "--batch-size", "8", "--n-samples", "4")) == 0
    capsys.readouterr()
    before = sorted(p.name for p in a.iterdir())
    rc = main(["train", "--config", str(a / "config.json"), "--resume", str(a), "--steps", "2"])
    assert rc == 2
    assert "use one of them" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in a.iterdir()) == before


def test_json_only_nothing_executes(data_dir, tmp_path, capsys):
    """A file that would run code under pickle or eval is only ever a bad JSON file."""
    marker = tmp_path / "ran"
    cfg = tmp_path / "config.json"
    cfg.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    rc = main(base_args(data_dir, tmp_path / "run", "--config", str(cfg)))
    assert rc == 2 and not marker.exists()
    one_error_line(capsys.readouterr().err)
