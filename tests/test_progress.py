"""ehr_assets.progress: when a line is due, what it says, and the training loop's lines between its log steps."""

from __future__ import annotations

import numpy as np
import pytest

from ehr_assets import progress
from ehr_assets.progress import Progress, duration


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_line_when_due_and_only_then():
    clock, lines = FakeClock(), []
    p = Progress("embedded", 1000, lines.append, unit="contexts", every_s=15, clock=clock)
    clock.t += 10
    assert not p.advance(100) and lines == []  # 10 s: not yet
    clock.t += 5
    assert p.advance(100)  # 15 s since the start
    assert lines == ["embedded: 200/1,000 contexts (20 %), 13.3 contexts/s, 1 min 0 s left, 15 s so far"]
    clock.t += 14
    assert not p.advance(100)  # 14 s since the last line
    p.mark()  # the caller logged its own line
    clock.t += 14
    assert not p.advance(100)
    clock.t += 1
    assert p.advance(100, note="12,345 tokens/s")
    assert lines[-1].endswith("| 12,345 tokens/s") and "500/1,000" in lines[-1]
    p.finish()
    assert len(lines) == 3 and "500/1,000 contexts (50 %)" in lines[-1]


def test_rate_and_time_left_count_from_a_resumed_start():
    clock, lines = FakeClock(), []
    p = Progress("sft", 1000, lines.append, unit="steps", start=400, every_s=1, clock=clock)
    clock.t += 60
    p.at(460)  # 60 steps in 60 s, 540 to go
    assert lines == ["sft: 460/1,000 steps (46 %), 1.0 steps/s, 9 min 0 s left, 1 min 0 s so far"]


def test_unknown_total_and_silent_log():
    clock, lines = FakeClock(), []
    p = Progress("rows", None, lines.append, every_s=1, clock=clock)
    clock.t += 2
    p.advance(10)
    assert lines == ["rows: 10 items, 5.0 items/s, 2 s so far"]
    quiet = Progress("x", 3, None, every_s=1, clock=clock)
    clock.t += 5
    assert not quiet.advance() and quiet.done == 1
    quiet.finish()  # no log function: nothing to call
    with pytest.raises(ValueError, match="every_s"):
        Progress("x", 1, None, every_s=0)


def test_duration():
    assert [duration(s) for s in (0, 44.6, 60, 725, 3600 * 3 + 120)] == [
        "0 s",
        "45 s",
        "1 min 0 s",
        "12 min 5 s",
        "3 h 02 min",
    ]


def test_training_loop_logs_between_its_log_steps(monkeypatch, tmp_path):
    """With log_every beyond the run, the loop still says where it is whenever a line is due."""
    from ehr_assets.specs import RecipeSpec
    from ehr_assets.train import TrainData, train

    monkeypatch.setattr(progress, "EVERY_S", 1e-9)  # every step is due
    rng = np.random.default_rng(0)
    seqs = [np.concatenate([[1], rng.integers(4, 30, size=20)]).astype(np.int64) for _ in range(6)]
    data = TrainData(seqs, [(s, 10) for s in seqs], 30, 0, 3, 1, 2)
    tiny = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}
    recipe = RecipeSpec.model_validate(
        {
            "name": "beat",
            "backbone": {"architecture": "llama", "config": {**tiny, "intermediate_size": 32}},
            "objective": "sft",
            "training": {"steps": 5, "batch_size": 2, "seq_len": 16, "log_every": 100, "monitor_nodes": 0},
        }
    )
    lines: list[str] = []
    train(recipe, data, tmp_path / "out", log=lines.append)
    records = [m for m in lines if m.startswith("beat step ")]
    beats = [m for m in lines if m.startswith("beat: ") and " steps (" in m]
    assert [r.split()[2] for r in records] == ["1/5", "5/5"]  # the loss-curve lines: first and last step
    assert [b.split()[1] for b in beats] == ["2/5", "3/5", "4/5"]  # a progress line at each step between them
    assert all("tok/s" in b for b in beats)
