"""The ``easel`` command: the offline front end on the same service and database as the bot.

Exit status: 0 success, 2 invalid input, 3 refused (quota, queue, ban, policy), 1 internal failure.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import mimetypes
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from bot.core.errors import ConfigError, EaselError, InvalidInput, Refused
from bot.core.imaging import compose_grid
from bot.core.models import MASK_FOLDER
from bot.core.service import Actor, Outcome, Service, Submission, Upload
from engine.requests import Progress

if TYPE_CHECKING:
    from bot.app import App

EXIT_OK, EXIT_INTERNAL, EXIT_INVALID, EXIT_REFUSED = 0, 1, 2, 3
log = logging.getLogger("easel")


class ProgressBar:
    """A one-line bar on a terminal; nothing when output is piped."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.enabled = stream.isatty()

    def __call__(self, progress: Progress) -> None:
        if not self.enabled or progress.total <= 0:
            return
        width = 30
        done = int(width * progress.step / progress.total)
        bar = "█" * done + "·" * (width - done)
        self.stream.write(f"\r  {bar} {progress.step}/{progress.total} steps")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()


def _actor(args: argparse.Namespace) -> Actor:
    name = args.user or getpass.getuser() or "local"
    # The operator at the keyboard administers their own installation.
    return Actor(key=f"local:{name}", name=name, is_admin=True)


async def _run_job(
    service: Service, submit: Callable[..., Awaitable[Submission]], args: argparse.Namespace
) -> int:
    bar = ProgressBar()
    submission = await submit(on_progress=bar)
    job = submission.job
    if submission.position:
        print(f"Job #{job.id} queued: {submission.position} ahead of it.", file=sys.stderr)
    try:
        outcome = await service.finish(submission)
    except (KeyboardInterrupt, asyncio.CancelledError):
        bar.close()
        await service.cancel(_actor(args), job.id)
        print(f"Cancelled job #{job.id}.", file=sys.stderr)
        return 130
    finally:
        bar.close()
    _write_outcome(service, outcome, Path(args.out))
    return EXIT_OK


def _write_outcome(service: Service, outcome: Outcome, out: Path) -> None:
    job = outcome.job
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for image in outcome.images:
        if image.withheld:
            print(f"  image {image.index + 1}: withheld by the image check", file=sys.stderr)
            continue
        path = out / f"job{job.id}_{image.index + 1}.png"
        path.write_bytes(service.image_bytes(image))
        written.append(path)
    visible = [i for i in outcome.images if not i.withheld]
    if len(visible) > 1:
        grid = out / f"job{job.id}_grid.png"
        compose_grid([service.open_image(i) for i in visible]).save(grid)
        written.insert(0, grid)
    seeds = ", ".join(str(i.seed) for i in outcome.images)
    print(f"Job #{job.id} ({job.kind}): {job.spec.width}×{job.spec.height}, seeds {seeds}")
    for path in written:
        print(f"  {path}")
    print(f"Remake: {service.remake_command(job)}")


def _read_upload(path: str, what: str = "the start image") -> Upload:
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"Cannot read {what} {path}: {exc.strerror}.") from None
    content_type, _ = mimetypes.guess_type(file.name)
    return Upload(data=data, content_type=content_type)


# -- commands ------------------------------------------------------------------------------------


async def cmd_imagine(service: Service, args: argparse.Namespace) -> int:
    upload = _read_upload(args.image) if args.image else None
    actor = _actor(args)
    prompts = await service.permutations(actor, args.prompt)
    if len(prompts) > 1:
        print(f"The {{…}} options make {len(prompts)} prompts: one job each.", file=sys.stderr)
    for text in prompts:
        status = await _run_job(
            service,
            lambda on_progress, text=text: service.imagine(
                actor, text, upload=upload, on_progress=on_progress
            ),
            args,
        )
        if status != EXIT_OK:
            return status
    return EXIT_OK


async def cmd_models(service: Service, args: argparse.Namespace) -> int:
    actor = _actor(args)
    found = service.models(actor, await service.guild(actor))
    for m in found.models:
        default = " (default)" if m.name == found.default else ""
        print(
            f"{m.name}{default}: {m.family or '?'}, {m.steps} steps, cfg {m.guidance:g}, "
            f"{m.sampler}, {m.native_side}px" + (f" — {m.description}" if m.description else "")
        )
    for title, entries in (("LoRAs", found.loras), ("Embeddings", found.embeddings)):
        print(f"{title}: " + (", ".join(e.name for e in entries) or "none"))
    return EXIT_OK


async def cmd_upscale(service: Service, args: argparse.Namespace) -> int:
    actor = _actor(args)
    return await _run_job(
        service,
        lambda on_progress: service.upscale(
            actor,
            args.job,
            _index(args.n),
            mode=args.mode,
            factor=args.factor,
            on_progress=on_progress,
        ),
        args,
    )


async def cmd_blend(service: Service, args: argparse.Namespace) -> int:
    actor = _actor(args)
    uploads = [_read_upload(path, "the image") for path in args.files]
    return await _run_job(
        service,
        lambda on_progress: service.blend(actor, uploads, args.prompt, on_progress=on_progress),
        args,
    )


async def cmd_describe(service: Service, args: argparse.Namespace) -> int:
    described = await service.describe(_actor(args), _read_upload(args.file, "the image"))
    for number, prompt in enumerate(described.prompts, 1):
        print(f"{number}. {prompt}")
    print(f"(job #{described.job.id}, aspect {described.job.params['aspect']})", file=sys.stderr)
    return EXIT_OK


async def cmd_vary(service: Service, args: argparse.Namespace) -> int:
    actor = _actor(args)
    return await _run_job(
        service,
        lambda on_progress: service.vary(
            actor,
            args.job,
            _index(args.n),
            strong=args.strong,
            prompt=args.prompt,
            on_progress=on_progress,
        ),
        args,
    )


async def cmd_region(service: Service, args: argparse.Namespace) -> int:
    mask = _read_mask(service, args.mask) if args.mask else None
    cells = _cells(args.cells) if args.cells is not None else None
    return await _run_edit(
        service, args, service.region, prompt=args.prompt, area=args.area, cells=cells, mask=mask
    )


async def cmd_zoom(service: Service, args: argparse.Namespace) -> int:
    return await _run_edit(service, args, service.zoom, factor=args.factor, prompt=args.prompt)


async def cmd_pan(service: Service, args: argparse.Namespace) -> int:
    return await _run_edit(service, args, service.pan, direction=args.direction, prompt=args.prompt)


async def cmd_square(service: Service, args: argparse.Namespace) -> int:
    return await _run_edit(service, args, service.square)


async def _run_edit(
    service: Service,
    args: argparse.Namespace,
    edit: Callable[..., Awaitable[Submission]],
    **options: object,
) -> int:
    """An edit of image N of a job (region, zoom, pan, square), with its own options."""
    actor = _actor(args)
    return await _run_job(
        service,
        lambda on_progress: edit(
            actor, args.job, _index(args.n), seed=args.seed, on_progress=on_progress, **options
        ),
        args,
    )


def _read_mask(service: Service, path: str) -> Upload:
    """``--mask FILE``; a remake line names a stored mask by its place in the data directory."""
    if not Path(path).exists() and path.startswith(f"{MASK_FOLDER}/"):
        try:
            return Upload(service.files.read(path), "image/png")
        except OSError:
            pass  # not stored either: say the file cannot be read
    return _read_upload(path, "the mask")


def _cells(text: str) -> list[int]:
    """``--cells 1,2,5`` → [1, 2, 5] (the service says which numbers are out of range)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidInput(
            f"--cells takes cell numbers 1 to 9 separated by commas, e.g. 1,2,5; not {text!r}."
        ) from None


async def cmd_reroll(service: Service, args: argparse.Namespace) -> int:
    actor = _actor(args)
    return await _run_job(
        service, lambda on_progress: service.reroll(actor, args.job, on_progress=on_progress), args
    )


async def cmd_history(service: Service, args: argparse.Namespace) -> int:
    jobs, total = await service.history(
        _actor(args), search=args.search, page=0, per_page=args.limit
    )
    for job in jobs:
        print(
            f"#{job.id:<5} {job.created_at:%Y-%m-%d %H:%M}  {job.kind:<9} {job.state:<9} "
            f"{service.remake_command(job)}"
        )
    print(f"{len(jobs)} of {total} jobs.", file=sys.stderr)
    return EXIT_OK


async def cmd_show(service: Service, args: argparse.Namespace) -> int:
    job, images = await service.job(args.job)
    print(f"Job #{job.id}: {job.kind}, {job.state}" + (f" ({job.error})" if job.error else ""))
    print(f"  prompt:   {job.spec.prompt}")
    if job.spec.negative:
        print(f"  negative: {job.spec.negative}")
    print(
        f"  size {job.spec.width}×{job.spec.height}, steps {job.spec.steps}, "
        f"cfg {job.spec.guidance:g}, sampler {job.spec.sampler}, seed {job.spec.seed}"
    )
    if job.repro:
        print(
            f"  model {job.repro.get('model')} [{job.repro.get('model_identity')}], "
            f"{job.repro.get('scheduler')}, {job.repro.get('dtype')} on "
            f"{job.repro.get('device')}, torch {job.repro.get('torch')}, "
            f"diffusers {job.repro.get('diffusers')}"
        )
    print(f"Remake: {service.remake_command(job)}")
    if images and args.out:
        _write_outcome(service, Outcome(job, images), Path(args.out))
    return EXIT_OK


async def cmd_cancel(service: Service, args: argparse.Namespace) -> int:
    job = await service.cancel(_actor(args), args.job)
    print(f"Job #{job.id} is {job.state}.")
    return EXIT_OK


def _user_key(text: str) -> str:
    """A Discord user id, "discord:<id>", or a local name."""
    text = text.strip()
    if text.isdigit():
        return f"discord:{text}"
    return text if ":" in text else f"local:{text}"


async def cmd_admin(service: Service, args: argparse.Namespace) -> int:
    from bot.core.admin import Admin

    admin, actor, action = Admin(service), _actor(args), args.admin_command
    if action == "ban":
        target = _user_key(args.target)
        ban = await admin.ban(actor, target, reason=args.reason, duration=args.duration)
        until = f" until {ban.banned_until:%Y-%m-%d %H:%M} UTC" if ban.banned_until else ""
        print(f"{target} is banned everywhere{until}.")
    elif action == "unban":
        await admin.unban(actor, _user_key(args.target), reason=args.reason)
        print(f"{_user_key(args.target)} may use Easel again.")
    elif action == "quota":
        if args.daily != "default" and not args.daily.isdigit():
            raise InvalidInput("The quota is a number of images a day, or 'default'.")
        default = args.daily == "default"
        target = _user_key(args.target)
        quota = await admin.set_quota(
            actor,
            target,
            None if default else int(args.daily),
            back_to_default=default,
            reset_usage=args.reset,
        )
        print(f"{target}: {quota} images a day" + (", today's given back." if args.reset else "."))
    elif action == "block":
        print(f"Blocked '{await admin.block(actor, args.term)}'.")
    elif action == "unblock":
        print(f"Unblocked '{await admin.unblock(actor, args.term)}'.")
    elif action == "blocklist":
        for entry in await admin.blocklist(actor):
            print(entry.term)
    elif action == "queue":
        for entry in await admin.queue(actor):
            where = "running" if entry.job.state == "running" else f"{entry.position or 0} ahead"
            print(
                f"#{entry.job.id:<5} {where:<12} {entry.user.key:<24} {entry.job.spec.prompt[:60]}"
            )
    elif action == "cancel":
        print(f"Job #{(await admin.cancel(actor, args.job, reason=args.reason)).id} is cancelled.")
    elif action == "purge":
        job, messages = await admin.purge(actor, args.job, reason=args.reason)
        print(f"Job #{job.id} is purged (its images are deleted).")
        if messages:
            print(
                f"{len(messages)} Discord message(s) showed it and stay: the command line has no "
                "Discord connection; purge from Discord with /admin purge to delete them too."
            )
    elif action == "stats":
        stats = await admin.stats(actor)
        print(
            f"today: {stats.jobs_today} jobs, {stats.images_today} images, "
            f"by state {stats.by_state}; queue {stats.queue_length}; "
            f"mean {stats.mean_seconds}, p95 {stats.p95_seconds} s; "
            f"engine {'running' if stats.engine.alive else 'not running in this process'}"
        )
    elif action == "audit":
        for e in await admin.audit_log(actor, args.limit):
            print(
                f"{e.created_at:%Y-%m-%d %H:%M:%S}  {e.actor:<24} {e.action:<15} "
                f"{e.target or '':<20} {e.reason or ''}"
            )
    return EXIT_OK


def _index(n: int) -> int:
    if not 1 <= n <= 4:
        raise InvalidInput(f"Image numbers go from 1 to 4, not {n}.")
    return n - 1


# -- plumbing ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="easel", description="Easel: self-hosted image generation, offline front end."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def job_command(name: str, help: str, *, image_index: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("job", type=int, help="job id")
        if image_index:
            p.add_argument("n", type=int, help="image number, 1 to 4")
        p.add_argument("--out", default="out", help="folder for the images (default: out)")
        p.add_argument("--user", help="who the job is for (default: your login name)")
        return p

    p = sub.add_parser("imagine", help="make a grid from a prompt")
    p.add_argument("prompt", help='prompt with parameters, e.g. "a fox --ar 3:2 --seed 7"')
    p.add_argument("--out", default="out", help="folder for the images (default: out)")
    p.add_argument("--user", help="who the job is for (default: your login name)")
    p.add_argument(
        "--image",
        help="a start image (PNG, JPEG or WebP); with --control or --iw in the prompt, a control "
        "map's source or an image prompt",
    )
    p = job_command("upscale", "image N of a job at 2 or 4 times the size", image_index=True)
    p.add_argument(
        "--mode",
        choices=("subtle", "creative"),
        default="creative",
        help="subtle: the upscaler model keeps the image; creative (default): a light repaint",
    )
    p.add_argument("--factor", type=int, choices=(2, 4), default=2, help="2 (default) or 4")
    p = sub.add_parser("blend", help="a grid from 2 to 5 images (and optional text)")
    p.add_argument("files", nargs="+", metavar="FILE", help="2 to 5 images, in order")
    p.add_argument(
        "--prompt", help='text and/or parameters (parameters alone: --prompt="--ar 3:2")'
    )
    p.add_argument("--out", default="out", help="folder for the images (default: out)")
    p.add_argument("--user", help="who the job is for (default: your login name)")
    p = sub.add_parser("describe", help="four prompts that describe an image")
    p.add_argument("file", metavar="FILE", help="a PNG, JPEG or WebP image")
    p.add_argument("--user", help="who asks (default: your login name)")
    p = job_command("vary", "four variations of image N of a job", image_index=True)
    p.add_argument("--strong", action="store_true", help="vary strongly (default: subtly)")
    p.add_argument("--prompt", help="remix: a new prompt for the variations")
    job_command("reroll", "the same prompt with a new seed")
    p = job_command("region", "Vary (Region): repaint one part of image N", image_index=True)
    p.add_argument("--prompt", required=True, help="what the part should show")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--area", help='the part, in words: "the sky", "the dog\'s hat"')
    where.add_argument("--cells", help="cells of a 3×3 grid, 1-9 left to right, e.g. 1,2,5")
    where.add_argument("--mask", help="a black-and-white image of the same shape (white: change)")
    p = job_command("zoom", "Zoom Out: image N on a larger canvas", image_index=True)
    p.add_argument("--factor", type=float, default=2.0, help="1.1 to 2.0 (default: 2)")
    p.add_argument("--prompt", help="a new prompt (default: the image's own)")
    p = job_command("pan", "Pan: grow image N by half towards one side", image_index=True)
    p.add_argument("--direction", required=True, help="left, right, up or down")
    p.add_argument("--prompt", help="a new prompt (default: the image's own)")
    p = job_command(
        "square", "Make Square: a non-square image N on a square canvas", image_index=True
    )
    for name in ("region", "zoom", "pan", "square"):
        sub.choices[name].add_argument(
            "--seed", type=int, help="the seed of the first edit (default: a random one)"
        )
    p = sub.add_parser("models", help="the models, LoRAs and embeddings installed")
    p.add_argument("--user", help=argparse.SUPPRESS)
    p = sub.add_parser("history", help="recent jobs")
    p.add_argument("--user", help="whose jobs (default: yours)")
    p.add_argument("--search", help="only prompts containing this text")
    p.add_argument("--limit", type=int, default=20)
    p = sub.add_parser("show", help="a job's parameters (and its images with --out)")
    p.add_argument("job", type=int)
    p.add_argument("--out", help="write the job's images to this folder")
    p = sub.add_parser("cancel", help="cancel a queued or running job")
    p.add_argument("job", type=int)
    p.add_argument("--user")
    sub.add_parser("run", help="run the Discord bot (needs DISCORD_TOKEN)")
    p = sub.add_parser("sync-commands", help="register the slash commands with Discord now")
    p.add_argument(
        "--guild", type=int, help="only in this server (instant; development mode, see README)"
    )
    p.add_argument("--clear", action="store_true", help="remove the commands from --guild")
    admin = sub.add_parser("admin", help="moderation: bans, quotas, blocklist, queue, audit")
    admin.add_argument("--user", help=argparse.SUPPRESS)
    a = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    p = a.add_parser("ban", help="stop a user (Discord id or local name)")
    p.add_argument("target")
    p.add_argument("--reason")
    p.add_argument("--for", dest="duration", help="30m, 12h, 7d, 2w (default: until unbanned)")
    p = a.add_parser("unban", help="let a user back in")
    p.add_argument("target")
    p.add_argument("--reason")
    p = a.add_parser("quota", help="a user's daily images (a number, or 'default')")
    p.add_argument("target")
    p.add_argument("daily")
    p.add_argument("--reset", action="store_true", help="give back today's images too")
    for name in ("block", "unblock"):
        a.add_parser(name, help=f"{name} a prompt term (* is a wildcard)").add_argument("term")
    a.add_parser("blocklist", help="the blocked terms")
    a.add_parser("queue", help="jobs waiting or running")
    for name in ("cancel", "purge"):
        p = a.add_parser(name, help=f"{name} any job")
        p.add_argument("job", type=int)
        p.add_argument("--reason")
    a.add_parser("stats", help="today's jobs, images and generation times")
    a.add_parser("audit", help="recent admin actions and refusals").add_argument(
        "--limit", type=int, default=20
    )
    p = sub.add_parser(
        "worker", help="make this machine part of the bot's Ray cluster (EASEL_ENGINE=ray)"
    )
    p.add_argument("head", nargs="?", help="the head's HOST:6379 (without it: start the head here)")
    p.add_argument("--gpus", type=int, help="GPUs to offer (default: all of them)")
    p.add_argument("--cpus", type=int, help="CPU cores to offer (default: all of them)")
    p.add_argument("--port", type=int, default=6379, help="the head's port (default: 6379)")
    p = sub.add_parser("bench", help="engine benchmarks on the tiny model (table + JSON)")
    p.add_argument("--out", default="benchmarks/results/engine.json")
    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("upgrade", help="create the database or apply new migrations")
    return parser


SERVICE_COMMANDS: dict[str, Callable[[Service, argparse.Namespace], Awaitable[int]]] = {
    "imagine": cmd_imagine,
    "models": cmd_models,
    "upscale": cmd_upscale,
    "blend": cmd_blend,
    "describe": cmd_describe,
    "vary": cmd_vary,
    "reroll": cmd_reroll,
    "region": cmd_region,
    "zoom": cmd_zoom,
    "pan": cmd_pan,
    "square": cmd_square,
    "history": cmd_history,
    "show": cmd_show,
    "cancel": cmd_cancel,
    "admin": cmd_admin,
}


async def _dispatch(args: argparse.Namespace) -> int:
    from bot import app

    settings = app.settings()
    # The bot logs what it does; the offline commands keep a terminal quiet unless asked.
    quiet = args.command != "run" and settings.log_level == "INFO"
    app.configure_logging("WARNING" if quiet else settings.log_level)
    if args.command in ("run", "sync-commands"):
        token = settings.discord_token.get_secret_value() if settings.discord_token else ""
        if not token:
            raise ConfigError(
                "DISCORD_TOKEN is not set: create a bot at "
                "https://discord.com/developers/applications (see the README), or use "
                "`easel imagine` to make images offline."
            )
        from bot.logs import install_redaction

        install_redaction([token, app.db_password(settings)])
        if args.command == "sync-commands":
            from bot.client import sync_commands

            print(await sync_commands(token, settings.data_dir, args.guild, clear=args.clear))
            return EXIT_OK
        async with app.open_app(settings, runner="bot") as running:
            return await _run_bot(running, token)
    if args.command == "worker":
        try:
            from engine.serve import run_worker
        except ImportError:
            raise ConfigError(
                "Ray is not installed here: pip install 'easel[ray]' (see the README's "
                '"Several GPUs and machines").'
            ) from None
        return await asyncio.to_thread(
            run_worker, args.head, gpus=args.gpus, cpus=args.cpus, port=args.port
        )
    if args.command == "bench":
        from benchmarks.engine_bench import main as bench

        return await asyncio.to_thread(bench, ["--out", args.out])
    if args.command == "db":
        revision = await app.upgrade_database(settings)
        print(f"Database at {app.printable_db_url(settings)} is at revision {revision}.")
        return EXIT_OK
    needs_engine = args.command in ("imagine", "upscale", "vary", "reroll", "blend")
    needs_engine = needs_engine or args.command in ("region", "zoom", "pan", "square")
    async with app.open_app(settings, with_engine=needs_engine) as running:
        return await SERVICE_COMMANDS[args.command](running.service, args)


async def _run_bot(running: App, token: str) -> int:
    from bot.client import EaselBot

    bot = EaselBot(
        running.service,
        data_dir=running.settings.data_dir,
        command_guild=running.settings.command_guild,
    )
    async with bot:
        await bot.start(token)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_dispatch(args))
    except (ConfigError, InvalidInput) as exc:
        print(f"easel: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except Refused as exc:
        print(f"easel: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except EaselError as exc:
        print(f"easel: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last line of defence: one line, no traceback
        log.debug("internal failure", exc_info=True)
        print(f"easel: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
