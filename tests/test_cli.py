"""The `easel` command as a user runs it: a real process, a real data directory."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

CHECKOUT = Path(__file__).resolve().parents[1]


@pytest.fixture
def environment(tmp_path, model_dir, tiny_model):
    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to(model_dir / "models")  # reuse the session's tiny model

    def environment(**env: str) -> dict[str, str]:
        values = {
            **{k: v for k, v in os.environ.items() if not k.startswith("EASEL_")},
            "PYTHONPATH": str(CHECKOUT),  # this checkout's code, whatever is installed
            "EASEL_DATA_DIR": str(data),
            "EASEL_DEFAULT_STEPS": "4",
            "HF_HUB_OFFLINE": "1",
            **env,
        }
        values.pop("DISCORD_TOKEN", None)
        return values

    return environment


@pytest.fixture
def run(environment, tmp_path):
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bot", *args],
            capture_output=True,
            text=True,
            env=environment(**env),
            cwd=tmp_path,
            timeout=300,
        )

    return run


def test_a_killed_imagine_holds_no_job_slot(run, environment, tmp_path):
    """SIGKILL an `easel imagine` mid-job: the next one runs (the killed job held the only
    slot), and the killed job is closed as failed, charged nothing, never left running."""
    env = environment(EASEL_MAX_QUEUED_PER_USER="1", EASEL_MAX_STEPS="500")
    slow = subprocess.Popen(
        [sys.executable, "-m", "bot", "imagine", "a slow castle --steps 500"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    database = tmp_path / "data" / "easel.db"
    try:
        deadline = time.monotonic() + 120
        while _job_state(database) != "running":
            assert slow.poll() is None, "the slow job finished before it could be killed"
            assert time.monotonic() < deadline, "the slow job never started"
            time.sleep(0.1)
    finally:
        os.kill(slow.pid, signal.SIGKILL)
        slow.wait()
    result = run("imagine", "a quick castle --count 1", EASEL_MAX_QUEUED_PER_USER="1")
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(database) as db:
        state, error, charged = db.execute(
            "SELECT state, error, charged_images FROM job WHERE prompt = 'a slow castle'"
        ).fetchone()
    assert (state, charged) == ("failed", 0) and "stopped" in error


def _job_state(database: Path) -> str | None:
    try:
        with sqlite3.connect(database) as db:
            row = db.execute("SELECT state FROM job ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def job_id(stdout: str) -> str:
    return stdout.split("Job #", 1)[1].split(" ", 1)[0]


def test_imagine_writes_the_grid_and_the_images(run, tmp_path):
    result = run("imagine", "a lighthouse at dusk --ar 16:9 --seed 7", "--out", "out")
    assert result.returncode == 0, result.stderr
    job = job_id(result.stdout)
    out = tmp_path / "out"
    with Image.open(out / f"job{job}_grid.png") as grid:
        assert grid.size == (176, 96)
    for i in range(1, 5):
        with Image.open(out / f"job{job}_{i}.png") as image:
            assert image.size == (88, 48)
            assert "Seed: " + str(6 + i) in image.text["parameters"]
    assert "seeds 7, 8, 9, 10" in result.stdout
    assert "Remake: a lighthouse at dusk --ar 16:9 --seed 7 --steps 4" in result.stdout
    assert "█" not in result.stderr  # no progress bar when output is not a terminal


def test_follow_up_commands_work_from_the_recorded_job(run, tmp_path):
    job = job_id(run("imagine", "a castle --seed 3").stdout)
    up = run("upscale", job, "2")
    assert up.returncode == 0, up.stderr
    with Image.open(tmp_path / "out" / f"job{job_id(up.stdout)}_1.png") as image:
        assert image.size == (128, 128)
    vary = run("vary", job, "1", "--strong", "--prompt", "a castle in the snow")
    assert vary.returncode == 0 and "(remix)" in vary.stdout
    reroll = run("reroll", job)
    assert reroll.returncode == 0 and "(reroll)" in reroll.stdout
    history = run("history")
    assert history.returncode == 0 and len(history.stdout.splitlines()) == 4
    show = run("show", job)
    assert "seed 3" in show.stdout and "EulerAncestralDiscreteScheduler" in show.stdout
    cancel = run("cancel", job)
    assert cancel.returncode == 2 and "already done" in cancel.stderr


def test_invalid_input_exits_2_with_the_grammar_message(run):
    result = run("imagine", "a fox --seed 99999999999")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "easel: --seed must be from 0 to 4294967295; 99999999999 is not."
    )
    assert "Traceback" not in result.stderr
    assert run("upscale", "1", "7").returncode == 2  # image numbers go 1 to 4


def test_refusals_exit_3(run):
    result = run("imagine", "a fox", EASEL_DAILY_IMAGES_PER_USER="0")
    assert result.returncode == 3 and "switched off for you" in result.stderr


def test_bad_settings_and_missing_token_are_one_line(run):
    bad = run("imagine", "a fox", EASEL_MAX_STEPS="lots")
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("easel: Setting EASEL_MAX_STEPS:")
    assert len(bad.stderr.strip().splitlines()) == 1
    no_token = run("run")
    assert no_token.returncode == 2
    assert "DISCORD_TOKEN is not set" in no_token.stderr and "easel imagine" in no_token.stderr
    assert len(no_token.stderr.strip().splitlines()) == 1


def test_db_upgrade_creates_the_database(run, tmp_path):
    result = run("db", "upgrade")
    assert result.returncode == 0 and "revision 0005" in result.stdout
    assert Path(tmp_path / "data" / "easel.db").exists()


def test_two_devices_make_the_images_one_device_makes(run, tmp_path):
    """EASEL_DEVICE with several devices (two CPU "devices" here, as cuda:0,cuda:1 on a GPU
    machine): one engine per device, and the images do not depend on how many there are."""
    pixels = []
    for devices in ("cpu", "cpu:0,cpu:1"):
        result = run("imagine", "a lighthouse --seed 7 --count 2", EASEL_DEVICE=devices)
        assert result.returncode == 0, result.stderr
        with Image.open(tmp_path / "out" / f"job{job_id(result.stdout)}_2.png") as image:
            pixels.append(image.tobytes())
    assert pixels[0] == pixels[1]
    twice = run("imagine", "a fox", EASEL_DEVICE="cuda:0, cuda:0")
    assert twice.returncode == 2
    assert twice.stderr.strip() == "easel: Setting EASEL_DEVICE names a device twice."


def test_worker_without_ray_says_how_to_install_it(run, tmp_path):
    # A Python path where importing ray fails, as on a machine without the extra.
    blocker = tmp_path / "no_ray"
    (blocker / "ray").mkdir(parents=True)
    (blocker / "ray" / "__init__.py").write_text("raise ImportError('no ray here')\n")
    result = run("worker", PYTHONPATH=f"{blocker}{os.pathsep}{CHECKOUT}")
    assert result.returncode == 2
    assert "pip install 'easel[ray]'" in result.stderr and "Traceback" not in result.stderr
