"""Several devices in one process (EASEL_DEVICE=cuda:0,cuda:1): one executor per device, the fair
queue dispatching to whichever is free. Two CPU "devices" here: two pools, each with its own copy
of the tiny model and its own thread."""

from __future__ import annotations

import io
import threading

import pytest

from engine.catalogue import load_catalogue
from engine.pool import ModelPool
from engine.requests import GenerationRequest, JobCancelled, Operation
from engine.worker import DeviceExecutor, Engine, Job, split_devices

TIMEOUT = 120


def request(owner: str, seed: int, *, steps: int = 3, job_id: int | None = None):
    return GenerationRequest(
        Operation.TXT2IMG,
        f"a lighthouse, painted by {owner}",
        "",
        64,
        64,
        steps,
        7.0,
        "euler_a",
        (seed,),
        owner=owner,
        job_id=job_id,
    )


def png(image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


class RecordingDevice(DeviceExecutor):
    """A real device executor that also records which jobs it was handed, in order."""

    def __init__(self, pool: ModelPool, name: str, log: list[tuple[str, int]]) -> None:
        super().__init__(pool, name=name)
        self.log = log

    def start_batch(self, batch: list[Job], preview_interval: float, done) -> None:
        self.log.extend((self.name, j.request.job_id) for j in batch)
        super().start_batch(batch, preview_interval, done)


@pytest.fixture(scope="module")
def pools(model_dir):
    """Two pools on the CPU, as two GPUs would each have one."""
    catalogue = load_catalogue(None, "tiny")
    return [ModelPool(catalogue, data_dir=model_dir, device="cpu") for _ in range(2)]


def start_long(engine: Engine, owner: str, job_id: int):
    """A 400-step job, once it is running."""
    started = threading.Event()
    handle = engine.submit(
        request(owner, job_id, steps=400, job_id=job_id),
        on_progress=lambda p: p.step >= 1 and started.set(),
    )
    assert started.wait(TIMEOUT)
    return handle


def two_device_engine(pools, log, **kw) -> Engine:
    devices = [RecordingDevice(p, f"cpu{i}", log) for i, p in enumerate(pools)]
    return Engine(pools[0], executors=devices, preview_interval=0, **kw)


def test_batches_go_out_in_fair_order_to_either_device_with_the_same_pixels(pools, tiny_model):
    jobs = [("ann", 1), ("ann", 2), ("ann", 3), ("bob", 4), ("cy", 5), ("bob", 6)]
    log: list[tuple[str, int]] = []
    engine = two_device_engine(pools, log, batch_max_images=1, max_per_owner=5)
    handles = [engine.submit(request(o, s, job_id=s)) for o, s in jobs]
    # Round-robin across owners, first-in-first-out within one.
    fair = [1, 4, 5, 2, 6, 3]
    assert [q.job_id for q in engine.snapshot()] == fair
    engine.start()
    try:
        results = {h.job_id: h.result(TIMEOUT) for h in handles}
    finally:
        engine.stop()
    assert [job_id for _, job_id in log] == fair
    assert {device for device, _ in log} == {"cpu0", "cpu1"}
    done = {e["name"]: e["jobs_done"] for e in engine.health().extra["executors"]}
    assert done["cpu0"] > 0 and done["cpu1"] > 0 and sum(done.values()) == len(jobs)

    # The same images as one device makes, whichever device made each.
    alone = Engine(tiny_model, preview_interval=0)
    alone.start()
    try:
        for owner, seed in jobs:
            expected = alone.submit(request(owner, seed)).result(TIMEOUT).images
            assert [png(i) for i in results[seed].images] == [png(i) for i in expected]
    finally:
        alone.stop()


def test_a_long_job_on_one_device_holds_up_no_one_and_cancels_alone(pools):
    log: list[tuple[str, int]] = []
    engine = two_device_engine(pools, log, batch_max_images=1)
    engine.start()
    try:
        long = start_long(engine, "ann", 1)
        # The other device takes the next jobs while the first is busy.
        short = [engine.submit(request(o, s, job_id=s)) for o, s in (("bob", 2), ("cy", 3))]
        assert all(len(h.result(TIMEOUT).images) == 1 for h in short)
        assert not long.done()
        assert engine.snapshot()[0].job_id == 1  # still running
        assert engine.cancel(1)
        with pytest.raises(JobCancelled):
            long.result(TIMEOUT)
        assert len(engine.submit(request("ann", 4)).result(TIMEOUT).images) == 1
    finally:
        engine.stop()
    by_device = {job_id: device for device, job_id in log}
    assert by_device[2] == by_device[3] != by_device[1]


def test_positions_count_a_wait_only_when_every_device_is_busy(pools):
    engine = two_device_engine(pools, [], batch_max_images=1)
    engine.start()
    try:
        first = start_long(engine, "ann", 1)
        # One device is free: the next job starts at once.
        second = start_long(engine, "bob", 2)
        assert second.position == 0
        third = engine.submit(request("cy", 3, job_id=3))
        assert third.position == 1  # behind the running batches
        for handle in (first, second):
            handle.cancel()
        assert len(third.result(TIMEOUT).images) == 1
    finally:
        engine.stop()


def test_device_lists_are_checked():
    assert split_devices("cuda:0, cuda:1") == ("cuda:0", "cuda:1")
    assert split_devices("auto") == ("auto",)
    with pytest.raises(ValueError, match="names a device twice"):
        split_devices("cuda:0,cuda:0")
    with pytest.raises(ValueError, match="empty entry"):
        split_devices("cuda:0,")
    with pytest.raises(ValueError, match="auto picks one device"):
        split_devices("auto,cuda:1")


def test_a_device_previews_after_the_first_step_then_throttles(pools):
    """A fast job still shows a preview: the first comes after step 1, not after a whole
    ``preview_interval`` (a 20-step job takes well under a second on a GPU)."""
    engine = Engine(pools[0], executors=[DeviceExecutor(pools[0])], preview_interval=60.0)
    engine.start()
    try:
        seen: list = []
        engine.submit(request("ann", 1, steps=6), on_progress=seen.append).result(TIMEOUT)
    finally:
        engine.stop()
    assert [p.step for p in seen] == [0, 1, 2, 3, 4, 5, 6]
    assert [p.step for p in seen if p.preview is not None] == [1]
