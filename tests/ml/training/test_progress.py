"""Step reports: throttled to a few a second, the last step of an epoch always shown, ETA from
the smoothed rate (driven by a simulated clock)."""

from __future__ import annotations

from open_autoglm.ml.training.progress import StepReporter


def _feed(rep: StepReporter, times: list[float], *, epoch: int = 0, steps: int = 10) -> list[dict]:
    out = []
    for step, now in enumerate(times):
        r = rep.step(
            now,
            epoch=epoch,
            step=step,
            steps_per_epoch=steps,
            loss=1.0 / (step + 1),
            samples=32,
            seconds=0.1,
        )
        if r is not None:
            out.append(r)
    return out


def test_reports_are_throttled_but_the_epoch_end_is_always_shown() -> None:
    rep = StepReporter(epochs=2, interval_s=0.5)
    # 10 steps 0.1 s apart: the first, then one every 0.5 s, and the last of the epoch
    reports = _feed(rep, [i * 0.1 for i in range(10)])
    assert [r["step"] for r in reports] == [0, 5, 9]
    assert reports[-1]["message"] == "epoch 1/2 step 10/10"
    assert reports[-1]["fraction"] == 0.5


def test_eta_counts_the_steps_left_at_the_measured_rate() -> None:
    rep = StepReporter(epochs=2, interval_s=0.0)
    reports = _feed(rep, [float(i) for i in range(10)])
    # 320 samples/s steady (32 per 0.1 s): 10 steps left of 0.1 s each after the first epoch
    assert reports[-1]["samples_per_s"] == 320.0
    assert reports[-1]["eta_s"] == 1.0
    last = _feed(rep, [10.0 + i for i in range(10)], epoch=1)[-1]
    assert last["eta_s"] == 0 and last["fraction"] == 1.0


def test_a_resumed_run_counts_only_what_is_left() -> None:
    rep = StepReporter(epochs=4, start_epoch=3, interval_s=0.0)
    first = _feed(rep, [0.0], epoch=3)[0]
    assert first["eta_s"] == 0.9  # 9 steps of the one epoch left, not of four
    assert first["fraction"] == (3 * 10 + 1) / 40
