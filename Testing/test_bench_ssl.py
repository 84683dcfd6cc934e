"""``sar bench ssl``'s verdicts: a difference smaller than the seed spread is no difference."""

from __future__ import annotations

from sar.bench_ssl import markdown, summarise


def rows(init: str, dices: list[float], step: int = 100) -> list[dict]:
    return [{"init": init, "dataset": "brats", "region": "tumor core", "step": step, "seed": s, "dice": d}
            for s, d in enumerate(dices)]


def verdicts(table: list[dict]) -> dict[str, str]:
    return {s["init"]: s["vs_scratch"] for s in table}


def test_better_and_worse_need_more_than_the_larger_spread() -> None:
    table = summarise(rows("scratch", [0.40, 0.42, 0.44]) + rows("sar", [0.60, 0.61, 0.62])
                      + rows("restoration", [0.20, 0.21, 0.22]) + rows("sar_no_adv", [0.30, 0.45, 0.60]))
    assert verdicts(table) == {"scratch": "-", "sar": "better", "restoration": "worse", "sar_no_adv": "no difference"}
    scratch = next(s for s in table if s["init"] == "scratch")
    assert abs(scratch["mean"] - 0.42) < 1e-9 and scratch["n"] == 3


def test_each_step_is_compared_with_scratch_at_the_same_step() -> None:
    table = summarise(rows("scratch", [0.1, 0.1, 0.1], 100) + rows("sar", [0.3, 0.3, 0.3], 100)
                      + rows("scratch", [0.5, 0.5, 0.5], 300) + rows("sar", [0.3, 0.3, 0.3], 300))
    by_step = {s["step"]: s["vs_scratch"] for s in table if s["init"] == "sar"}
    assert by_step == {100: "better", 300: "worse"}
    assert "| brats | tumor core | 300 | sar | 0.300 ± 0.000 (3) | worse |" in markdown(table)
