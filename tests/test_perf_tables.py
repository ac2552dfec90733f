"""The perf benchmarks' bookkeeping (not their timings): losses, gains kept, peer tables, ideals."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmark.contracts import BackboneSpec
from tools import perf_replay, perf_selectors


def test_loss_is_signed_by_the_objectives_direction() -> None:
    craig, kcenter = perf_selectors.OBJECTIVES["craig"], perf_selectors.OBJECTIVES["kcenter"]
    assert craig.maximise and not kcenter.maximise
    assert perf_selectors._loss(craig, 99.0, 100.0) == pytest.approx(1.0)  # lower F: worse
    assert perf_selectors._loss(kcenter, 10.1, 10.0) == pytest.approx(1.0)  # larger radius: worse
    assert perf_selectors._loss(kcenter, 9.9, 10.0) == pytest.approx(-1.0)
    assert math.isnan(perf_selectors._loss(craig, 1.0, float("nan")))


def test_gain_kept_runs_from_random_to_exact() -> None:
    assert perf_selectors._gain_kept(100.0, 100.0, 90.0) == pytest.approx(100.0)
    assert perf_selectors._gain_kept(90.0, 100.0, 90.0) == pytest.approx(0.0)
    assert perf_selectors._gain_kept(10.5, 10.0, 11.0) == pytest.approx(50.0)  # a radius: lower is better
    assert math.isnan(perf_selectors._gain_kept(1.0, 2.0, 2.0))


def row(n: int, selector: str, implementation: str, exact: bool, cpu: float, value: float, **extra) -> dict:
    return {
        "n": n,
        "selector": selector,
        "implementation": implementation,
        "options": extra.get("options", ""),
        "exact": exact,
        "cpu_seconds": cpu,
        "wall_seconds": cpu,
        "kernel_seconds": extra.get("kernel", 0.0),
        "value": value,
        "exact_value": 100.0,
        "loss_vs_exact_pct": 0.0,
        "random_value": 90.0,
        "gain_kept_pct": 100.0,
    }


def test_peer_table_compares_ours_with_the_fastest_exact_peer() -> None:
    table = pd.DataFrame(
        [
            row(10, "craig", "ours", True, 1.0, 100.0),
            row(10, "craig", "apricot", True, 3.0, 100.0, kernel=1.0),
            row(10, "craig", "submodlib", True, 4.0, 100.0, kernel=1.0),
            row(10, "craig", "ours", False, 0.5, 99.0, options="partitions=2"),
            row(10, "ocs", "ours", True, 1.0, 1.0),  # no peer at this size: no row
        ]
    )
    peers = perf_selectors.peer_table(table)
    assert len(peers) == 1
    (found,) = peers.to_dict("records")
    assert found["fastest_peer"] == "apricot"
    assert found["speedup"] == 3.0 and found["speedup_without_kernel"] == 2.0
    options = perf_selectors.option_table(table)
    assert options["options"].tolist() == ["partitions=2"]


def test_replay_ideal_counts_the_cls_token() -> None:
    assert perf_replay.ideal_speedup(0.25, 16) == pytest.approx(17 / 5)
    assert perf_replay.ideal_speedup(0.25, 64) == pytest.approx(65 / 17)
    assert perf_replay.ideal_speedup(1.0, 16) == 1.0


def test_replay_rows_each_way_timed_as_named_and_compile_only_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[tuple[int, perf_replay.StepWay]] = []

    def fake_make_step(spec: BackboneSpec, parts: list[tuple[float, int]], way: perf_replay.StepWay):
        made.append((len(parts), way))
        tokens = sum(perf_replay.kept_token_count(t, spec.tokens) for t, _ in parts)
        # a step costs 10 ms, 1 ms a forward and 1 ms a token fed; packed, its batches share one forward
        return lambda: 10.0 + tokens + len(parts) - (len(parts) - 1) * way.packed

    def fake_timing(steps_by_key: dict, steps: int, repeats: int) -> dict:
        return {key: step() for key, step in steps_by_key.items()}

    monkeypatch.setattr(perf_replay, "make_step", fake_make_step)
    monkeypatch.setattr(perf_replay, "interleaved_best_ms", fake_timing)
    plain, in_step = perf_replay.run_replay_perf(batch_size=4, steps=1, repeats=1)
    cells = len(perf_replay.SETTINGS) * len(perf_replay.FRACTIONS)
    assert set(plain["optimizer"]) == {"fused", "loop", "fused+math-attention"}
    assert not any(way.compiled for _, way in made)
    # only the math-attention rows leave scaled_dot_product_attention; they keep the fused optimizer
    unfused_attention = [way for _, way in made if not way.sdpa]
    assert len(unfused_attention) == cells and all(way.fused for way in unfused_attention)
    assert sum(not way.fused for _, way in made) == cells  # the loop rows
    # speed-ups are within a way: 16 tokens at t = 1/4 feed 4 of 16 tokens, (11 + 16) / (11 + 4)
    quarter = plain[(plain["token_fraction"] == 0.25) & (plain["setting"] == "split-shapes (16 tokens)")]
    assert quarter["speedup"].tolist() == [round(27 / 15, 2)] * 3
    # in step: what the replayed half adds; packed saves the second batch's fixed millisecond
    first = in_step[in_step["setting"] == "split-shapes (16 tokens)"].set_index("token_fraction")
    assert first.loc[0.25, "new_only_ms"] == 27.0
    assert first.loc[0.25, "replay_ms"] == 5.0 and first.loc[0.25, "packed_replay_ms"] == 4.0
    assert first.loc[0.25, "packed_replay_speedup"] == 4.0 and first.loc[0.25, "replay_speedup"] == round(
        17 / 5, 2
    )
    assert sum(way.packed for parts, way in made if parts == 2) == cells
    assert not any(way.packed for parts, way in made if parts == 1)
    made.clear()
    with_compile, in_step = perf_replay.run_replay_perf(batch_size=4, steps=1, repeats=1, compiled=True)
    assert set(with_compile["optimizer"]) == {"fused", "loop", "fused+math-attention", "fused+compile"}
    # only the fused+compile throughput rows are made compiled; the in-step table never is
    assert sum(way.compiled for _, way in made) == cells
    assert not any(way.compiled or not way.sdpa for parts, way in made if parts == 2)
    assert len(in_step) == cells


def test_interleaved_timing_warms_every_step_then_times_each_once_a_round() -> None:
    order: list[str] = []
    steps = {name: (lambda name=name: order.append(name)) for name in ("a", "b")}
    result = perf_replay.interleaved_best_ms(steps, steps=2, repeats=3)
    assert set(result) == {"a", "b"} and all(ms >= 0 for ms in result.values())
    assert order == ["a"] * 3 + ["b"] * 3 + ["a", "a", "b", "b"] * 3


def test_replay_math_attention_model_writes_attention_out_with_the_same_weights() -> None:
    spec = perf_replay.SETTINGS["split-shapes (16 tokens)"]
    kernel, _ = perf_replay._model_and_optimizer(spec, fused=True)
    written_out, _ = perf_replay._model_and_optimizer(spec, fused=True, sdpa=False)
    assert all(block.attn.fused_attn for block in kernel.vit.blocks)
    assert not any(block.attn.fused_attn for block in written_out.vit.blocks)
    batch, _ = perf_replay._batch(spec, 4, 3, perf_replay.seeded_generator(0, 1))
    with torch.no_grad():
        assert torch.allclose(kernel(batch), written_out(batch), atol=1e-5)


def test_selector_perf_names_the_peers_it_left_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = pd.DataFrame(
        [row(10, "craig", "ours", True, 1.0, 100.0), row(10, "craig", "plain", True, 9.0, 100.0)]
    )
    monkeypatch.setattr(perf_selectors, "run_selector_perf", lambda *args, **kwargs: table)
    monkeypatch.setattr(perf_selectors.selector_peers, "missing_peers", lambda: ["apricot", "submodlib"])
    perf_selectors.main(["--sizes", "10", "--out", str(tmp_path / "missing")])
    assert "apricot, submodlib not installed" in capsys.readouterr().err
    assert "left out: apricot, submodlib" in (tmp_path / "missing" / "selectors.md").read_text()
    # with every peer installed, or peers left out on purpose, no such line
    monkeypatch.setattr(perf_selectors.selector_peers, "missing_peers", lambda: [])
    perf_selectors.main(["--sizes", "10", "--out", str(tmp_path / "all")])
    perf_selectors.main(["--sizes", "10", "--no-peers", "--out", str(tmp_path / "none")])
    assert "left out" not in (tmp_path / "all" / "selectors.md").read_text()
    assert "left out" not in (tmp_path / "none" / "selectors.md").read_text()
    assert "not installed" not in capsys.readouterr().err


@pytest.mark.parametrize("sdpa", [True, False])
def test_packed_forward_gives_each_batch_its_own_logits_and_gradients(sdpa: bool) -> None:
    spec = perf_replay.SETTINGS["split-shapes (16 tokens)"]
    model, _ = perf_replay._model_and_optimizer(spec, fused=True, sdpa=sdpa)
    generator = perf_replay.seeded_generator(0, 2)
    batches = [perf_replay._batch(spec, kept, size, generator)[0] for kept, size in ((16, 3), (4, 5), (1, 2))]
    packed = perf_replay.packed_logits(model, batches)
    separate = [model(batch) for batch in batches]
    assert [tuple(out.shape) for out in packed] == [(3, 10), (5, 10), (2, 10)]
    for mine, theirs in zip(packed, separate, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-5)
    # the same loss gives the same gradients (the packed graph is the model's, not a copy)
    grads = []
    for outputs in (packed, separate):
        model.zero_grad()
        sum(out.square().sum() for out in outputs).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-4)
    # the logits differ between samples, so the comparisons above are not trivially equal
    assert not torch.allclose(packed[1][0], packed[1][1])
