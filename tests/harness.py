"""The real bot wired to the fake Discord server, for end-to-end tests (fixtures in conftest)."""

from __future__ import annotations

import io
from contextlib import asynccontextmanager

from PIL import Image

from bot.client import EaselBot
from bot.core.grammar import Defaults, Limits
from bot.core.service import Service, ServiceConfig
from bot.processes import is_alive
from engine.worker import Engine

WAIT = 30.0
GRID_IDS = [
    "u:{j}:0",
    "u:{j}:1",
    "u:{j}:2",
    "u:{j}:3",
    "r:{j}",
    "v:{j}:0",
    "v:{j}:1",
    "v:{j}:2",
    "v:{j}:3",
    "dm:{j}",
    "x:{j}",
]


def custom_ids(message: dict) -> list[str]:
    return [c["custom_id"] for row in message["components"] for c in row["components"]]


def image_of(message: dict) -> Image.Image:
    (attachment,) = message["attachments"]
    return Image.open(io.BytesIO(attachment["data"]))


def job_id_of(message: dict) -> int:
    return int(custom_ids(message)[0].split(":")[2])


class Harness:
    def __init__(self, fake, store, files, tiny_model, tmp_path):
        self.fake, self.store, self.files, self.model = fake, store, files, tiny_model
        self.data_dir = tmp_path / "data"
        self.engines: list[Engine] = []

    def service(self, *, start=True, classifier=None, **config) -> Service:
        engine = Engine(self.model, preview_interval=0.01, max_per_owner=50, queue_size=200)
        if start:
            engine.start()
        self.engines.append(engine)
        config.setdefault("max_queued_per_user", 50)
        cfg = ServiceConfig(limits=Limits(), defaults=Defaults(steps=6), **config)
        return Service(
            self.store, self.files, engine, cfg, classifier=classifier, is_alive=is_alive
        )

    async def text(self, name: str, options: dict | None = None, **kw) -> str:
        """A command answered with text only (privately): that text."""
        interaction = await self.fake.slash(name, options or {}, **kw)
        return (await self.answer(interaction))["content"]

    async def answer(self, interaction) -> dict:
        """The interaction's first message with content: its answer (or its first status)."""
        return await self.fake.wait_for_message(
            lambda m: (
                m["id"] in ([interaction.original_id, *interaction.followup_ids])
                and bool(m["content"])
            ),
            timeout=WAIT,
        )

    async def refused(self, interaction) -> str:
        """The ❌ line an interaction was answered with."""
        message = await self.fake.wait_for_message(
            lambda m: (
                m["id"] in ([interaction.original_id, *interaction.followup_ids])
                and "❌" in m["content"]
            ),
            timeout=WAIT,
        )
        return message["content"]

    async def forget_me(self, user) -> None:
        """/forget-me, confirmed."""
        asked = await self.fake.slash("forget-me", user=user)
        await asked.wait_for_response(WAIT)
        prompt = asked.original
        (button,) = custom_ids(prompt)
        await self.fake.click(prompt, button, user=user)
        await self.fake.wait_for_message(
            lambda m: m["id"] == prompt["id"] and "Done" in m["content"], timeout=WAIT
        )

    @asynccontextmanager
    async def bot(self, service: Service | None = None):
        bot = EaselBot(service or self.service(), data_dir=self.data_dir, progress_interval=0.05)
        async with self.fake.run_client(bot) as running:
            yield running

    async def imagine(self, prompt: str, **kw) -> tuple[object, dict]:
        interaction = await self.fake.slash("imagine", {"prompt": prompt}, **kw)
        final = await self.fake.wait_for_message(
            lambda m: m["id"] == (interaction.original_id or "") and m["components"],
            timeout=WAIT,
        )
        return interaction, final

    async def done(self, interaction) -> dict:
        """The interaction's own message once it carries buttons (the finished result)."""
        return await self.fake.wait_for_message(
            lambda m: m["id"] == (interaction.original_id or "") and m["components"],
            timeout=WAIT,
        )

    def close(self):
        for engine in self.engines:
            engine.stop()
