"""The capacity model (benchmarks/capacity.py): a day runs through the real fair queue, and its
waits and fairness behave as an operator sizing a server would expect."""

from __future__ import annotations

import json

import pytest

from benchmarks.capacity import (
    REFERENCE_STEPS,
    Action,
    Caps,
    Gpu,
    Job,
    Session,
    Traffic,
    capacity,
    fairness_window_s,
    main,
    make_day,
    simulate,
)

# A slow GPU and a small server load the queue as a fast GPU and a large server would, with
# fewer events to simulate.
SLOW_GPU = Gpu(images_per_second=1.2, full_batch=8)
CAPS = Caps.from_settings()


@pytest.fixture(scope="module")
def busy_day():
    """More members than one slow GPU serves at the evening peak."""
    return make_day(Traffic(members=30_000), seed=3)


def grid(think_s: float = 0.0, steps: int = 25) -> Action:
    return Action("imagine", 4, 512, 512, steps, ("txt2img", 512, 512, steps, None), think_s)


def chain(user: int, start: float, presses: int) -> Session:
    """A member pressing 🔄 again as soon as each grid arrives."""
    return Session(user, start, tuple(grid() for _ in range(presses)))


def job_of(count: int, steps: int, pixels: int = 512 * 512) -> Job:
    return Job(0, None, 0, count, pixels, count * steps * pixels / (512 * 512), 0.0)  # type: ignore[arg-type]


def test_a_full_batch_runs_at_the_stated_images_per_second():
    gpu = Gpu(images_per_second=6.0, full_batch=8, batch_overhead_s=0.0)
    full = [job_of(4, REFERENCE_STEPS), job_of(4, REFERENCE_STEPS)]
    assert gpu.batch_seconds(full) == pytest.approx(8 / 6.0)
    # One image alone uses the GPU worse (A100: 44 image-steps/s alone, 60 in batches of 8).
    alone = gpu.batch_seconds([job_of(1, REFERENCE_STEPS)])
    assert 1 / 6.0 < alone < 1.5 / 6.0
    # An upscale to 1024² at strength 0.3 of 25 steps: 4× the pixels, 7 steps.
    upscale = gpu.batch_seconds([job_of(1, 7, pixels=1024 * 1024)])
    assert upscale == pytest.approx(4 * 7 / (6.0 * REFERENCE_STEPS), rel=0.05)


def test_every_admitted_job_is_delivered_once_and_a_refusal_ends_its_session():
    day = make_day(Traffic(members=4_000), seed=1)
    out = simulate(day, 1, SLOW_GPU, CAPS)
    assert out.jobs == len(out.waits) == len(out.results) > 0
    assert out.jobs < out.images <= 4 * out.jobs
    assert out.presses == out.reposts + out.jobs + sum(out.refused.values())
    assert out.presses < sum(len(s.actions) for s in day)  # refused sessions stopped
    assert min(out.waits) >= 0
    assert all(r > w for r, w in zip(sorted(out.results), sorted(out.waits), strict=True))
    # The heavy tail of members meets the daily quota.
    assert out.refused["quota"] > 0


def test_more_gpus_never_increase_the_p99_wait(busy_day):
    rows = [simulate(busy_day, n, SLOW_GPU, CAPS).summary() for n in (1, 2, 4, 8)]
    p99 = [r["wait_p99_s"] for r in rows]
    assert p99[0] > 10  # one GPU is overloaded at the peak, so the comparison means something
    assert p99 == sorted(p99, reverse=True)
    assert rows[-1]["wait_p99_s"] < 1
    use = [r["gpu_use"] for r in rows]
    assert use[1] == pytest.approx(use[0] / 2, rel=0.15)


def test_the_fair_queue_bounds_what_a_flooder_takes_where_fifo_does_not():
    """One member keeps ten jobs queued, four keep two each; all are always waiting."""
    caps = Caps.from_settings(max_queued_per_user=10, daily_images_per_user=10**6)
    sessions = [chain(0, 0.0, 150) for _ in range(10)]
    sessions += [chain(user, 0.0, 150) for user in range(1, 5) for _ in range(2)]
    fair = simulate(sessions, 1, SLOW_GPU, caps, queue="fair").summary()
    fifo = simulate(sessions, 1, SLOW_GPU, caps, queue="fifo").summary()
    assert fair["busy_windows"] >= 5 and fifo["busy_windows"] >= 5
    # Round-robin: each waiting member gets one grid per round, the flooder included.
    assert fair["fairness_worst"] <= 1.5
    # First come, first served: the flooder's share grows with its queued jobs (10 vs 2).
    assert fifo["fairness_median"] >= 3


def test_members_already_served_are_served_every_round_during_a_surge():
    """An announcement brings a newcomer every quarter second for ten minutes, more than the
    GPU serves; two members who keep two prompts going each must still get a grid every round."""
    gpu = Gpu(images_per_second=6.0, full_batch=8)
    caps = Caps.from_settings(daily_images_per_user=10**6)
    sessions = [chain(user, 0.0, 400) for user in (0, 1) for _ in range(2)]
    sessions += [Session(2 + i, 5.0 + 0.25 * i, (grid(),)) for i in range(2400)]
    out = simulate(sessions, 1, gpu, caps)
    summary = out.summary()
    assert out.refused["queue_full"] > 0 and summary["busy_windows"] > 0  # a real surge
    assert summary["starved_windows"] == 0
    assert max(out.longest_wait[0], out.longest_wait[1]) <= fairness_window_s(gpu, caps)


def test_capacity_grows_with_the_gpu_and_holds_the_target():
    traffic = Traffic(members=2_000)
    slow = capacity(1, SLOW_GPU, CAPS, traffic, target_p99_s=30, precision=1.1)
    fast = capacity(
        1, Gpu(2 * SLOW_GPU.images_per_second, 8), CAPS, traffic, target_p99_s=30, precision=1.1
    )
    assert slow["at_capacity"]["wait_p99_s"] <= 30
    assert fast["at_capacity"]["wait_p99_s"] <= 30
    assert 1.6 < fast["active_members"] / slow["active_members"] < 2.8
    assert slow["members"] == round(slow["active_members"] / traffic.active_share)


def test_the_command_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "capacity.json"
    main(["--members", "3000", "--gpus", "1", "2", "--capacity-gpus", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "wait p99" in printed and "fair worst" in printed
    report = json.loads(out.read_text())
    assert [r["gpus"] for r in report["rows"]] == [1, 2]
    assert report["traffic"]["members"] == 3000 and report["capacity"] == []
    with pytest.raises(SystemExit):
        main(["--traffic", "no_such=1", "--out", str(out)])
    assert "'no_such' is not a traffic setting" in capsys.readouterr().err
