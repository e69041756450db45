"""The progress line: redrawn in place on a terminal (rate and ETA from the host clock, the
losses of the last log step, messages above it), plain lines otherwise."""
from __future__ import annotations

import io

from fastgan.engine.progress import Progress, _eta

STATS = {"d_loss": 1.25, "g_loss": 0.5, "d_real": 0.75, "d_fake": 0.25}


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_plain_lines_off_a_terminal():
    out, clk = io.StringIO(), Clock()
    p = Progress(100, stream=out, clock=clk)
    assert not p.tty
    for step in range(1, 51):
        clk.t += 0.1
        p.tick(step)
    assert out.getvalue() == ""          # no redraws into a log
    p.log(50, 10.0, STATS)
    p.message("eval step 50: fid 12")
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == ("[##########..........] step 50/100 |     10.0 it/s | ETA 0:05 | "
                        "d_loss 1.2500 g_loss 0.5000 | D(x) 0.750 D(G(z)) 0.250")
    assert lines[1] == "eval step 50: fid 12" and "\r" not in out.getvalue()


def test_terminal_redraws_one_line_and_prints_messages_above_it():
    out, clk = io.StringIO(), Clock()
    p = Progress(1000, stream=out, tty=True, clock=clk, redraw_s=1.0, power=lambda: 412.0)
    draws = 0
    for step in range(1, 201):
        clk.t += 0.01                      # 100 it/s
        before = out.getvalue().count("\r\033[K")
        p.tick(step)
        draws += out.getvalue().count("\r\033[K") - before
    assert draws == 2                      # once a second, not every iteration
    assert "\n" not in out.getvalue()
    assert "step 101/1000 |    100.0 it/s | ETA 0:09" in out.getvalue()
    assert "412 W" in out.getvalue()
    p.log(200, 100.0, STATS)
    p.message("fastgan: checkpoint")
    tail = out.getvalue().rsplit("fastgan: checkpoint", 1)
    assert tail[0].endswith("\r\033[K") and tail[1].startswith("\n\r\033[K[####")
    assert "d_loss 1.2500" in tail[1]      # the progress line is drawn again below it
    p.close()
    assert out.getvalue().endswith("\n")


def test_eta_format():
    assert _eta(5) == "0:05" and _eta(125) == "2:05" and _eta(3725) == "1:02:05"
    assert _eta(float("inf")) == "?"
