"""``msgnn-bench perf``: work counted on the meta device, measured cases, table and errors."""
from __future__ import annotations

import json
import math

import pytest
import torch

from benchmark.tools.perf import REFERENCE_S, conv_width, count_work, measure, perf_main, table
from benchmark.core.registry import build_model

# graph off, one sub-network of one block: head 3->32, two 3x3 32->32 convs, tail 3x3 + 1x1 32->3
# (the last dense 1x1 and fusion conv are built but never run)
TINY = {"graph": False, "n_subnets": 1, "blocks": 1}
TINY_MACS_PER_PX = 3 * 32 * 9 + 3 * 32 * 32 * 9 + 32 * 3


def test_work_is_counted_on_meta_and_matches_the_layer_sizes():
    w = count_work("msgnn", TINY)
    assert w["gflop_321x481"] == pytest.approx(2 * 321 * 481 * TINY_MACS_PER_PX / 1e9, rel=1e-9)
    # training: forward + backward (grad input + grad weight: about 2x forward; the first conv needs no
    # grad input) plus the -SSIM loss's Gaussian-window convolutions
    fwd = 2 * 64 * 64 * TINY_MACS_PER_PX / 1e9
    assert 2.5 * fwd < w["gflop_train_sample"] < 3.2 * fwd
    assert w["params"] == sum(p.numel() for p in build_model("msgnn", **TINY).parameters())


def test_a_measured_case_counts_the_same_work_as_meta():
    row = measure("msgnn", "infer321", torch.device("cpu"), 1, TINY)
    assert row["gflop"] == pytest.approx(count_work("msgnn", TINY)["gflop_321x481"], rel=1e-9)
    # in-process after other tests the case may reuse freed memory: growth >= 0 (a fresh process, as
    # `perf` runs each case, is checked in test_perf_main_json_runs_cases_in_a_fresh_process)
    assert row["median_ms"] > 0 and row["peak_bytes"] >= 0 and row["memory"] == "peak RSS growth"
    # efficiency: achieved GFLOP/s over a dense 3x3 conv at the model's width, timed in this process
    assert row["reference"]["width"] == conv_width(build_model("msgnn", **TINY)) == 32
    assert row["gflops"] == pytest.approx(row["gflop"] / (row["median_ms"] / 1e3))
    assert row["efficiency"] == pytest.approx(row["gflops"] / row["reference"]["gflops"])
    assert row["reference"]["total_ms"] >= 1e3 * REFERENCE_S  # the short reference is timed >= 1 s in all
    assert math.isfinite(row["efficiency"]) and row["efficiency"] > 0  # its size swings with load: not asserted
    assert row["threads"] == torch.get_num_threads()


def test_bf16_autocast_training_step_runs_on_cpu():
    row = measure("msgnn", "train", torch.device("cpu"), 1, TINY, amp="bf16")
    assert row["amp"] == "bf16" and row["gflop"] > 0


def test_perf_main_prints_a_table_per_model(capsys):
    assert perf_main(["--models", "rescan", "prenet", "--cases", "none"]) == 0
    out = capsys.readouterr().out
    assert "| model | params | GFLOP/sample 64² (f+b) | GFLOP 321×481 |" in out
    assert "| rescan | 149,823 |" in out and "| prenet | 168,963 |" in out


def test_perf_main_json_runs_cases_in_a_fresh_process(capsys):
    assert perf_main(["--models", "msgnn", "--cases", "infer321", "--repeats", "1", "--json",
                      "--model-args", json.dumps(TINY), "--threads", "1"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["models"] == ["msgnn"] and res["cases"][0]["case"] == "infer321"
    assert "threads" in res["device"] and res["cases"][0]["model_args"] == TINY
    assert res["cases"][0]["peak_bytes"] > 0  # a fresh process: the model and a 321x481 image pair grow it
    assert "| msgnn |" in table(res) and "infer 321x481 eff." in table(res)


def test_unknown_model_or_case_is_one_clear_error(capsys):
    with pytest.raises(SystemExit):
        perf_main(["--models", "nosuch", "--cases", "none"])
    assert "unknown model(s) ['nosuch']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        perf_main(["--cases", "fly"])
    assert "unknown case(s)" in capsys.readouterr().err
