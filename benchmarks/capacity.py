"""Capacity model: how many Discord members N GPUs serve, how long they wait, how fairly.

    python -m benchmarks.capacity [--members 10000] [--images-per-second 6] [--gpus 1 2 4 8]
        [--queue fair fifo] [--target-p99 10] [--capacity-gpus 1 2] [--traffic surges=0 ...]
        [--out benchmarks/results/capacity.json]

A discrete-event simulation in simulated time (no sleeping: seconds of CPU for a day). A
synthetic day of one Discord server's traffic goes through the real
:class:`engine.fairqueue.FairQueue` and the engine's batching policy (``pop_batch`` with the
batch size limit, as the thread in ``engine/worker.py`` calls it) to N simulated GPUs that share
the one queue, each taking the next batch when free. A batch's time comes from the published
GPU figures below; the GPU's speed is an ASSUMPTION until ``benchmarks/gpu_bench.py`` has run on
the GPU in question: pass its figure as ``--images-per-second``.

Printed for each N: queue wait (submitted → its batch starts) p50, p99 and max, result time p99,
refusals, GPU use, images per batch, and fairness. Fairness: in busy windows (no GPU idle all
window), among the members who had a job waiting at every dispatch of the window, the images each
was served, max/min ("inf": one of them got nothing in the whole window). A window is twice the
longest round of the queue (a full queue of default grids, each run alone), so round-robin
serves each waiting member at least once per window. Then the capacity: the most members
generating in a day that N GPUs serve with p99 wait ≤ ``--target-p99``.

Every traffic figure is an ASSUMPTION, stated next to its default, and can be changed with
``--traffic NAME=VALUE`` (e.g. ``--traffic surges=0 think_median_s=30``).
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import heapq
import itertools
import json
import math
import platform
import random
import time
from collections import defaultdict, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from bot.core.grammar import Limits, aspect_to_size
from bot.settings import Settings
from engine.fairqueue import FairQueue
from engine.requests import OwnerAtCapacity, QueueAtCapacity

DAY = 86_400.0
NATIVE_SIDE = 512  # SD 1.5
NATIVE_PIXELS = NATIVE_SIDE * NATIVE_SIDE

# -- measured GPU figures ----------------------------------------------------------------------
# SD 1.5, 512×512, fp16, classifier-free guidance, SDPA + torch.compile (torch 2.0), whole
# pipeline calls, in pipeline iterations per second at each batch size, on an A100. Source:
# diffusers documentation, "Accelerated PyTorch 2.0 support in Diffusers", Benchmark section,
# tables "A100 (batch size: 1/4/16)", row "SD - txt2img", column "torch 2.0 - compile"
# (huggingface/diffusers, docs/source/en/optimization/torch2.0.mdx, v0.17).
A100_ITERATIONS_PER_SECOND = {1: 44.03, 4: 14.62, 16: 3.83}
# H100 over A100 for diffusion inference: "H100s can double or triple an A100's throughput"
# (Baseten, "Unlocking the full power of NVIDIA H100 GPUs for ML inference with TensorRT", on
# SDXL). The low end, since Easel runs plain PyTorch, not TensorRT. An ASSUMPTION, not a
# measurement: no H100 figure for Easel exists yet (benchmarks/gpu_bench.py makes one).
H100_OVER_A100 = 2.0
# Steps of the figure --images-per-second refers to: gpu_bench.py's setting and the target in
# the project's GPU issue (≥ 14 images/s at 20 steps on one H100).
REFERENCE_STEPS = 20


def _image_steps_per_second(batch: float) -> float:
    """A100 throughput in image-steps/s at ``batch`` images, interpolated in log2(batch)."""
    points = sorted((b, ips * b) for b, ips in A100_ITERATIONS_PER_SECOND.items())
    x = math.log2(max(batch, 1.0))
    for (b0, y0), (b1, y1) in itertools.pairwise(points):
        x0, x1 = math.log2(b0), math.log2(b1)
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def default_images_per_second(batch_max_images: int) -> float:
    """The assumed H100: A100 figure at a full batch × H100_OVER_A100, in 20-step images/s."""
    return _image_steps_per_second(batch_max_images) * H100_OVER_A100 / REFERENCE_STEPS


@dataclass(frozen=True)
class Gpu:
    """A batch's time: its work at this GPU's full-batch rate, scaled by the A100's batch-size
    efficiency (a batch of 1 runs at 72% of the rate of a batch of 8), plus a fixed overhead.
    Work is image-steps at 512²: time grows about linearly with pixels at a given step count
    (https://blog.salad.com/stable-diffusion-v1-5-benchmark/: 2.25× the pixels, about 2× the
    time, across 23 GPUs)."""

    images_per_second: float  # txt2img, 512², REFERENCE_STEPS steps, at a full batch
    full_batch: int
    batch_overhead_s: float = 0.05  # ASSUMPTION: prompt encoding and hand-over per call

    def batch_seconds(self, jobs: Sequence[Job]) -> float:
        work = sum(job.work for job in jobs)
        # A larger image keeps the GPU as busy as that many 512² images.
        occupancy = sum(job.count * job.pixels / NATIVE_PIXELS for job in jobs)
        efficiency = _image_steps_per_second(occupancy) / _image_steps_per_second(self.full_batch)
        rate = self.images_per_second * REFERENCE_STEPS * efficiency
        return self.batch_overhead_s + work / rate


# -- traffic -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Traffic:
    """A day of one Discord server. Every default is an ASSUMPTION (no published figures on
    self-hosted image bots exist): override them to match your server's /admin stats."""

    members: int = 10_000
    active_share: float = 0.05  # members who generate on a given day
    # Sessions (an /imagine and the buttons pressed on its results) per active member per day:
    # 1 + Lomax(shape, scale), a heavy tail (a few members make dozens), mean 1 + scale/(shape-1),
    # cut at max_sessions (the daily quota refuses long before).
    session_tail_shape: float = 1.5
    session_tail_scale: float = 2.0
    max_sessions: int = 60
    sessions_per_visit: float = 3.0  # a member's sessions come in visits ...
    session_gap_s: float = 240.0  # ... a mean 4 min apart, so prompts overlap
    # Daily cycle: rate ∝ 1 + swing·cos(2π(hour − peak)/24), evenings busiest.
    peak_hour: float = 21.0
    daily_swing: float = 0.6
    # Surges (an announcement, a contest): rate × factor for some minutes, during 12:00–24:00.
    surges: int = 2
    surge_factor: float = 3.0
    surge_minutes: float = 20.0
    think_median_s: float = 20.0  # looking at a result before pressing a button (log-normal)
    repost_s: float = 0.5  # U1–U4: the stored PNG posted again, no GPU work
    default_steps: int = Settings.model_fields["default_steps"].default
    custom_steps_share: float = 0.15  # jobs with --steps of their own (other batch keys)
    # --ar mix; each aspect is its own batch key.
    aspects: tuple[tuple[tuple[int, int], float], ...] = (
        ((1, 1), 0.60),
        ((16, 9), 0.14),
        ((9, 16), 0.10),
        ((3, 2), 0.08),
        ((2, 3), 0.08),
    )

    @property
    def active_members(self) -> int:
        return round(self.members * self.active_share)


# What members press, after a grid and after a single image (U, or an upscale). The shares are
# ASSUMPTIONS shaped like Midjourney's flow: most grids get a U, a few a V or a reroll.
AFTER_GRID = (("u", 0.45), ("v", 0.15), ("reroll", 0.12), ("end", 0.28))
AFTER_SINGLE = (
    ("upscale", 0.25),
    ("vary_subtle", 0.12),
    ("vary_strong", 0.10),
    ("remix", 0.05),
    ("u", 0.18),
    ("end", 0.30),
)
# Strengths as bot/core/service.py sets them; img2img runs int(steps × strength) steps
# (diffusers' StableDiffusionImg2ImgPipeline.get_timesteps).
STRENGTH = {"v": 0.65, "vary_subtle": 0.35, "vary_strong": 0.65, "remix": 0.65, "upscale": 0.3}
GRID = 4  # images in a grid; service.VARIATIONS and the default --count
MAX_ACTIONS = 12  # ASSUMPTION: presses in one session at most


@dataclass(frozen=True)
class Action:
    """One press, pre-drawn, so that every N sees the same members pressing the same buttons."""

    name: str
    count: int  # images; 0: no GPU work (U1–U4)
    width: int
    height: int
    steps: int  # denoising steps actually run
    key: Hashable  # the batch key: operation, size, steps, strength
    think_s: float  # before this press, after the previous result arrived


@dataclass(frozen=True)
class Session:
    user: int
    start: float
    actions: tuple[Action, ...]


def _choose(rng: random.Random, table: Sequence[tuple[Any, float]]) -> Any:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


def _script(rng: random.Random, traffic: Traffic) -> tuple[Action, ...]:
    aspect = _choose(rng, traffic.aspects)
    width, height = aspect_to_size(aspect, NATIVE_SIDE, Limits())
    steps = traffic.default_steps
    if rng.random() < traffic.custom_steps_share:
        steps = rng.choice((15, 20, 30, 40, 50))

    def think() -> float:
        # After a U, the image is posted again before the member sees it.
        after_u = traffic.repost_s if actions and actions[-1].count == 0 else 0.0
        return after_u + rng.lognormvariate(math.log(traffic.think_median_s), 0.8)

    def job(name: str, w: int, h: int, strength: float | None, count: int = GRID) -> Action:
        run = steps if strength is None else max(1, int(steps * strength))
        key = ("txt2img" if strength is None else "img2img", w, h, steps, strength)
        return Action(name, count, w, h, run, key, think() if actions else 0.0)

    actions: list[Action] = []
    actions.append(job("imagine", width, height, None))
    state = "grid"
    while len(actions) < MAX_ACTIONS:
        name = _choose(rng, AFTER_GRID if state == "grid" else AFTER_SINGLE)
        if name == "end":
            break
        if name == "u":
            actions.append(Action("u", 0, width, height, 0, None, think()))
            state = "single"
        elif name == "reroll":
            actions.append(job("reroll", width, height, None))
            state = "grid"
        elif name == "upscale":
            actions.append(job("upscale", width * 2, height * 2, STRENGTH[name], count=1))
            break  # the member saves the large image; nothing is pressed on it here
        else:  # v, vary_subtle, vary_strong, remix: four img2img variations
            actions.append(job(name, width, height, STRENGTH[name]))
            state = "grid"
    return tuple(actions)


def _rate_profile(traffic: Traffic, rng: random.Random) -> list[float]:
    """Cumulative arrival weights per minute of the day (daily cycle and surges)."""
    minutes = int(DAY // 60)
    rate = [
        1 + traffic.daily_swing * math.cos(2 * math.pi * (m / 60 - traffic.peak_hour) / 24)
        for m in range(minutes)
    ]
    for _ in range(traffic.surges):
        start = rng.randrange(12 * 60, minutes - int(traffic.surge_minutes))
        for m in range(start, start + int(traffic.surge_minutes)):
            rate[m] *= traffic.surge_factor
    return list(itertools.accumulate(rate))


def make_day(traffic: Traffic, seed: int = 1) -> list[Session]:
    """Every session of one day, by start time."""
    rng = random.Random(seed)
    cumulative = _rate_profile(traffic, rng)
    total = cumulative[-1]
    sessions = []
    for user in range(traffic.active_members):
        u = rng.random()
        lomax = traffic.session_tail_scale * ((1 - u) ** (-1 / traffic.session_tail_shape) - 1)
        count = min(1 + int(lomax), traffic.max_sessions)
        visits = max(1, round(count / traffic.sessions_per_visit))
        per_visit = [count // visits + (1 if i < count % visits else 0) for i in range(visits)]
        for n in per_visit:
            minute = bisect.bisect_left(cumulative, rng.random() * total)
            t = (minute + rng.random()) * 60
            for _ in range(n):
                if t >= DAY:
                    break
                sessions.append(Session(user, t, _script(rng, traffic)))
                t += rng.expovariate(1 / traffic.session_gap_s)
    sessions.sort(key=lambda s: s.start)
    return sessions


# -- the simulation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Caps:
    """The installation's limits; the defaults are bot/settings.py's."""

    queue_size: int
    max_queued_per_user: int
    daily_images_per_user: int
    batch_max_images: int

    @classmethod
    def from_settings(cls, **overrides: int) -> Caps:
        names = ("queue_size", "max_queued_per_user", "daily_images_per_user", "batch_max_images")
        defaults = {name: Settings.model_fields[name].default for name in names}
        return cls(**{**defaults, **overrides})


@dataclass(eq=False)
class Job:
    user: int
    session: Session
    index: int  # of the action in the session
    count: int
    pixels: int
    work: float  # image-steps at 512²
    submitted: float


class Queue(Protocol):
    def push(self, owner: str, item: Job, *, size: int = 1, key: Hashable = None) -> int: ...
    def pop_batch(self, max_size: int) -> list[Job]: ...
    def __len__(self) -> int: ...


class FifoQueue:
    """The baseline the fair queue replaces: first come, first served, with the same caps and
    batching (the first job plus later compatible jobs, while they fit)."""

    def __init__(self, *, max_items: int, max_per_owner: int) -> None:
        self.max_items = max_items
        self.max_per_owner = max_per_owner
        self._items: deque[tuple[str, Job, int, Hashable]] = deque()
        self._per_owner: dict[str, int] = defaultdict(int)

    def __len__(self) -> int:
        return len(self._items)

    def push(self, owner: str, item: Job, *, size: int = 1, key: Hashable = None) -> int:
        if len(self._items) >= self.max_items:
            raise QueueAtCapacity("The queue is full.")
        if self._per_owner[owner] >= self.max_per_owner:
            raise OwnerAtCapacity("You already have too many jobs waiting.")
        self._items.append((owner, item, size, key))
        self._per_owner[owner] += 1
        return len(self._items) - 1

    def pop_batch(self, max_size: int) -> list[Job]:
        if not self._items:
            return []
        key = self._items[0][3]
        batch: list[Job] = []
        keep: deque[tuple[str, Job, int, Hashable]] = deque()
        total = 0
        for entry in self._items:
            owner, item, size, entry_key = entry
            if entry_key == key and (not batch or total + size <= max_size):
                batch.append(item)
                total += size
                self._per_owner[owner] -= 1
            else:
                keep.append(entry)
        self._items = keep
        return batch


QUEUES: dict[str, Callable[..., Queue]] = {"fair": FairQueue, "fifo": FifoQueue}


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted values (0 for none)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _shown(ratio: float | None) -> float | str | None:
    return "inf" if ratio == math.inf else None if ratio is None else round(ratio, 2)


def fairness_window_s(gpu: Gpu, caps: Caps) -> float:
    """Twice the longest round: a full queue of default grids, each run alone."""
    steps = Settings.model_fields["default_steps"].default
    grid = Job(0, None, 0, GRID, NATIVE_PIXELS, GRID * steps, 0.0)  # type: ignore[arg-type]
    return 2 * caps.queue_size * gpu.batch_seconds([grid])


@dataclass
class Outcome:
    gpus: int
    queue: str
    jobs: int = 0
    images: int = 0
    presses: int = 0  # every command and button pressed
    reposts: int = 0  # of which U1–U4 (no GPU work)
    refused: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    waits: list[float] = field(default_factory=list)
    results: list[float] = field(default_factory=list)
    longest_wait: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    busy_seconds: float = 0.0
    batches: int = 0
    fairness: list[float] = field(default_factory=list)  # max/min per busy window

    def summary(self) -> dict[str, Any]:
        waits, results, fair = sorted(self.waits), sorted(self.results), sorted(self.fairness)
        return {
            "gpus": self.gpus,
            "queue": self.queue,
            "presses": self.presses,
            "reposts": self.reposts,
            "jobs": self.jobs,
            "images": self.images,
            "refused": dict(self.refused),
            "wait_p50_s": round(_quantile(waits, 0.5), 2),
            "wait_p99_s": round(_quantile(waits, 0.99), 2),
            "wait_max_s": round(_quantile(waits, 1.0), 2),
            "result_p99_s": round(_quantile(results, 0.99), 2),
            "gpu_use": round(self.busy_seconds / (self.gpus * DAY), 3),
            "images_per_batch": round(self.images / self.batches, 2) if self.batches else 0.0,
            "busy_windows": len(fair),
            "starved_windows": sum(1 for r in fair if r == math.inf),
            "fairness_median": _shown(_quantile(fair, 0.5) if fair else None),
            "fairness_worst": _shown(fair[-1] if fair else None),
        }


def simulate(
    sessions: Sequence[Session],
    gpus: int,
    gpu: Gpu,
    caps: Caps,
    *,
    queue: str = "fair",
    window_s: float | None = None,
) -> Outcome:
    """One day. A free GPU takes ``pop_batch(batch_max_images)``, as the engine's thread does;
    the service's checks come first (jobs waiting or running per member, the daily quota with
    unfinished jobs' images reserved); a refused press ends its session (the member reads why)."""
    q = QUEUES[queue](max_items=caps.queue_size, max_per_owner=caps.max_queued_per_user)
    window_s = window_s or fairness_window_s(gpu, caps)
    out = Outcome(gpus, queue)
    seq = itertools.count()
    events: list[tuple[float, int, str, Any]] = [
        (s.start, next(seq), "press", (s, 0)) for s in sessions
    ]
    heapq.heapify(events)
    unfinished: dict[int, int] = defaultdict(int)  # queued or running, as the service counts
    reserved: dict[int, int] = defaultdict(int)  # images of unfinished jobs
    used: dict[int, int] = defaultdict(int)  # images delivered today
    waiting: dict[int, int] = defaultdict(int)
    backlog: set[int] = set()  # members with a job waiting
    idle = gpus
    idle_start: float | None = 0.0  # since when some GPU has had nothing to do
    not_busy: set[int] = set()  # windows in which a GPU was idle
    constant: dict[int, set[int]] = {}  # window → members waiting at each of its dispatches
    served: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))

    def press(session: Session, index: int, now: float) -> None:
        if index < len(session.actions):
            think = session.actions[index].think_s
            heapq.heappush(events, (now + think, next(seq), "press", (session, index)))

    def dispatch(now: float) -> None:
        nonlocal idle, idle_start
        while idle and len(q):
            window = int(now // window_s)
            if window in constant:
                constant[window] &= backlog
            else:
                constant[window] = set(backlog)
            batch = q.pop_batch(caps.batch_max_images)
            for job in batch:
                wait = now - job.submitted
                out.waits.append(wait)
                out.longest_wait[job.user] = max(out.longest_wait[job.user], wait)
                waiting[job.user] -= 1
                if not waiting[job.user]:
                    backlog.discard(job.user)
                served[window][job.user] += job.count
            seconds = gpu.batch_seconds(batch)
            out.busy_seconds += seconds
            out.batches += 1
            idle -= 1
            if idle == 0 and idle_start is not None:
                not_busy.update(range(int(idle_start // window_s), window + 1))
                idle_start = None
            heapq.heappush(events, (now + seconds, next(seq), "done", batch))

    while events:
        now, _, kind, data = heapq.heappop(events)
        if kind == "done":
            for job in data:
                unfinished[job.user] -= 1
                reserved[job.user] -= job.count
                used[job.user] += job.count
                out.images += job.count
                out.results.append(now - job.submitted)
                press(job.session, job.index + 1, now)
            idle += 1
            dispatch(now)
            if idle and idle_start is None:
                idle_start = now
            continue
        if now >= DAY:
            continue
        session, index = data
        action = session.actions[index]
        out.presses += 1
        if not action.count:  # U1–U4: the stored image again, no GPU work
            out.reposts += 1
            press(session, index + 1, now)
            continue
        user = session.user
        if unfinished[user] >= caps.max_queued_per_user:
            out.refused["per_member"] += 1
            continue
        if used[user] + reserved[user] + action.count > caps.daily_images_per_user:
            out.refused["quota"] += 1
            continue
        pixels = action.width * action.height
        work = action.count * action.steps * pixels / NATIVE_PIXELS
        job = Job(user, session, index, action.count, pixels, work, now)
        try:
            q.push(str(user), job, size=action.count, key=action.key)
        except (QueueAtCapacity, OwnerAtCapacity):
            out.refused["queue_full"] += 1
            continue
        out.jobs += 1
        unfinished[user] += 1
        reserved[user] += action.count
        waiting[user] += 1
        backlog.add(user)
        dispatch(now)
    if idle_start is not None:
        not_busy.update(range(int(idle_start // window_s), int(DAY // window_s) + 1))
    for window, members in constant.items():
        if window in not_busy or len(members) < 2:
            continue
        counts = [served[window][m] for m in members]
        out.fairness.append(max(counts) / min(counts) if min(counts) else math.inf)
    return out


# -- capacity and the command line -------------------------------------------------------------


def capacity(
    gpus: int,
    gpu: Gpu,
    caps: Caps,
    traffic: Traffic,
    *,
    target_p99_s: float,
    seed: int = 1,
    precision: float = 1.05,
) -> dict[str, Any]:
    """The most members generating in a day that ``gpus`` GPUs serve with the day's p99 queue
    wait ≤ the target: a geometric bisection over the member count, all else unchanged."""

    def run(active: int) -> Outcome:
        day = make_day(replace(traffic, members=round(active / traffic.active_share)), seed)
        return simulate(day, gpus, gpu, caps)

    # The bracket's top: the load that would keep the GPUs busy all day on average, which the
    # daily peak and surges make too much.
    probe = max(50, traffic.active_members)
    per_member = run(probe).busy_seconds / probe
    hi = max(2, int(gpus * DAY / per_member))
    lo = max(1, hi // 4)
    lo_summary = run(lo).summary()
    while lo_summary["wait_p99_s"] > target_p99_s and lo > 1:
        hi, lo = lo, max(1, lo // 4)
        lo_summary = run(lo).summary()
    while hi / lo > precision:
        mid = round(math.sqrt(lo * hi))
        if mid in (lo, hi):
            break
        summary = run(mid).summary()
        if summary["wait_p99_s"] <= target_p99_s:
            lo, lo_summary = mid, summary
        else:
            hi = mid
    return {
        "gpus": gpus,
        "target_p99_s": target_p99_s,
        "active_members": lo,
        "members": round(lo / traffic.active_share),
        "gpu_seconds_per_active_member": round(per_member, 2),
        "at_capacity": lo_summary,
    }


def _table(rows: Sequence[dict[str, Any]]) -> str:
    columns = (
        ("GPUs", "gpus", "{}"),
        ("queue", "queue", "{}"),
        ("jobs", "jobs", "{:,}"),
        ("images", "images", "{:,}"),
        ("refused", "refused", "{:,}"),
        ("GPU use", "gpu_use", "{:.1%}"),
        ("img/batch", "images_per_batch", "{:.2f}"),
        ("wait p50", "wait_p50_s", "{:.2f} s"),
        ("wait p99", "wait_p99_s", "{:.2f} s"),
        ("wait max", "wait_max_s", "{:.1f} s"),
        ("result p99", "result_p99_s", "{:.2f} s"),
        ("busy win", "busy_windows", "{}"),
        ("fair med", "fairness_median", "{}"),
        ("fair worst", "fairness_worst", "{}"),
    )
    cells = [[title for title, _, _ in columns]]
    for row in rows:
        values = {**row, "refused": sum(row["refused"].values())}
        cells.append(
            ["-" if values[key] is None else fmt.format(values[key]) for _, key, fmt in columns]
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _traffic_override(text: str) -> tuple[str, Any]:
    name, _, value = text.partition("=")
    fields = {f.name: f for f in dataclasses.fields(Traffic)}
    if name not in fields or name in ("members", "active_share", "aspects"):
        raise argparse.ArgumentTypeError(
            f"{name!r} is not a traffic setting here; one of: "
            + ", ".join(n for n in fields if n not in ("members", "active_share", "aspects"))
        )
    kind = type(getattr(Traffic(), name))
    try:
        return name, kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} takes a {kind.__name__}, not {value!r}") from None


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    settings_caps = Caps.from_settings()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.capacity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--members", type=int, default=Traffic.members)
    parser.add_argument(
        "--active-share",
        type=float,
        default=Traffic.active_share,
        help="members who generate on a given day",
    )
    parser.add_argument(
        "--images-per-second",
        type=float,
        default=round(default_images_per_second(settings_caps.batch_max_images), 2),
        help="one GPU's txt2img throughput at 512², 20 steps, full batches (default: the "
        "assumed H100 above; benchmarks/gpu_bench.py measures yours)",
    )
    parser.add_argument("--batch-overhead", type=float, default=Gpu.batch_overhead_s)
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--queue", choices=sorted(QUEUES), nargs="+", default=["fair"])
    parser.add_argument("--queue-size", type=int, default=settings_caps.queue_size)
    parser.add_argument(
        "--max-queued-per-user", type=int, default=settings_caps.max_queued_per_user
    )
    parser.add_argument(
        "--daily-images-per-user", type=int, default=settings_caps.daily_images_per_user
    )
    parser.add_argument("--batch-max-images", type=int, default=settings_caps.batch_max_images)
    parser.add_argument("--traffic", type=_traffic_override, nargs="*", default=[])
    parser.add_argument("--target-p99", type=float, default=10.0, help="seconds of queue wait")
    parser.add_argument("--capacity-gpus", type=int, nargs="*", default=[1])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/capacity.json"))
    args = parser.parse_args(argv)

    traffic = Traffic(members=args.members, active_share=args.active_share, **dict(args.traffic))
    caps = Caps(
        args.queue_size, args.max_queued_per_user, args.daily_images_per_user, args.batch_max_images
    )
    gpu = Gpu(args.images_per_second, caps.batch_max_images, args.batch_overhead)
    began = time.perf_counter()
    day = make_day(traffic, args.seed)
    rows = [
        simulate(day, n, gpu, caps, queue=queue).summary()
        for queue in args.queue
        for n in args.gpus
    ]
    print(
        f"One day, {traffic.members:,} members, {traffic.active_members:,} of them generating "
        f"({len(day):,} sessions). Each GPU: {gpu.images_per_second:g} images/s at 512², "
        f"{REFERENCE_STEPS} steps, batches of {caps.batch_max_images}. Caps: "
        f"{caps.max_queued_per_user} jobs per member, {caps.daily_images_per_user} images a "
        f"day, queue {caps.queue_size}. Fairness windows: "
        f"{fairness_window_s(gpu, caps):.0f} s."
    )
    print(_table(rows))
    capacities = []
    for n in args.capacity_gpus:
        found = capacity(n, gpu, caps, traffic, target_p99_s=args.target_p99, seed=args.seed)
        capacities.append(found)
        at = found["at_capacity"]
        print(
            f"{n} GPU{'s' if n > 1 else ''} at {gpu.images_per_second:g} images/s: about "
            f"{found['active_members']:,} members generating in a day ({found['members']:,} "
            f"members at {traffic.active_share:.0%}) with p99 queue wait ≤ "
            f"{args.target_p99:g} s (p50 {at['wait_p50_s']:.2f} s, max {at['wait_max_s']:.0f} "
            f"s, GPU use {at['gpu_use']:.0%} of the day; "
            f"{found['gpu_seconds_per_active_member']:.1f} GPU-seconds per member a day)."
        )
    seconds = time.perf_counter() - began
    report = {
        "benchmark": "capacity",
        "python": platform.python_version(),
        "seed": args.seed,
        "traffic": asdict(traffic),
        "actions": {"after_grid": AFTER_GRID, "after_single": AFTER_SINGLE, "strength": STRENGTH},
        "caps": asdict(caps),
        "gpu": asdict(gpu),
        "figures": {
            "a100_iterations_per_second": A100_ITERATIONS_PER_SECOND,
            "h100_over_a100": H100_OVER_A100,
            "reference_steps": REFERENCE_STEPS,
        },
        "fairness_window_s": round(fairness_window_s(gpu, caps), 1),
        "rows": rows,
        "capacity": capacities,
        "seconds": round(seconds, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"{seconds:.1f} s; wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
