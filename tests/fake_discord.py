"""A local fake of Discord (REST API + gateway) for end-to-end tests of discord.py bots.

`FakeDiscord` is an aiohttp server on 127.0.0.1 that speaks enough of Discord's HTTP API v10 and
gateway protocol for a real, unmodified `discord.Client` / `commands.Bot` to log in, connect,
sync its application commands and answer interactions. Tests drive it from the "user" side:
`slash()`, `click()` and `submit_modal()` build INTERACTION_CREATE payloads the way Discord sends
them and push them over the gateway; everything the bot sends back (interaction callbacks,
follow-ups, channel messages, edits, uploads) is kept in a message store the test can inspect
and wait on.

Typical use::

    async with FakeDiscord() as fake:  # starts the server and points discord.py at it
        async with fake.run_client(MyBot()) as bot:  # login + connect, waits for on_ready
            await bot.tree.sync(guild=discord.Object(int(fake.guild_id)))
            interaction = await fake.slash("imagine", {"prompt": "a cat"})
            message = await interaction.wait_for_followup()
            png = fake.attachment_bytes(message["attachments"][0])

Protocol notes that shaped this module (discord.py 2.7 sources in site-packages/discord/):

* Gateway URL: a plain `Client` connects to `DiscordWebSocket.DEFAULT_GATEWAY` (gateway.py,
  `from_client`) and never calls `GET /gateway`; only `AutoShardedClient` asks `GET /gateway/bot`
  (shard.py). After READY it resumes on READY's `resume_gateway_url`. All three point here.
* Compression: discord.py always asks for `compress=zlib-stream` (or `zstd-stream` when a zstd
  module is installed) in the gateway query string, but `received_message` only decompresses
  *binary* frames, so plain JSON text frames are accepted too. The fake honours `zlib-stream`
  (one zlib stream per connection, each message ending with a Z_SYNC_FLUSH) and falls back to
  text frames otherwise.
* Rate limits: discord.py retries a 429 only when the response carries a `Via` header and a JSON
  body; a 429 without `Via` is taken for a Cloudflare ban and raised as HTTPException at once
  (http.py `HTTPClient.request`, webhook/async_.py `AsyncWebhookAdapter.request`). It sleeps for
  the body's `retry_after`. 500/502/504 are retried after 1 + 2*attempt seconds (5 attempts).
* Readiness: discord.py fires `on_ready` only after `guild_ready_timeout` (default 2 s) has passed
  without another GUILD_CREATE (state.py `_delay_ready`); `run_client()` shortens it.
* Interaction callbacks are sent with `?with_response=1`; discord.py then reads an
  InteractionCallback object (`{"interaction": {...}, "resource": {...}}`, interactions.py
  `InteractionCallbackResponse`) and uses `response_message_id` to bind views to the message.
* The first follow-up after a deferred (type 5) response resolves the "thinking" message instead
  of creating a new one, and keeps its ephemeral flag (discord-api-docs #2742, #3466, #7091).

What the fake enforces as Discord does (each rule cites its docs page where it is implemented;
"docs:" below means https://discord.com/developers/docs/):

1. Response deadline: a callback more than `response_deadline` (3 s) after the interaction was
   sent fails with 404 / 10062 and is recorded in `late_responses` (Interaction.response_delay).
2. Ephemeral messages: a type 5 defer decides the visibility of the "thinking" message and of the
   follow-up that resolves it; they are reachable only through the interaction's webhook
   endpoints (channel endpoints answer 404 / 10008). `is_ephemeral()`, `ephemeral_for()`,
   `messages(visible_to=...)`.
3. Bot permissions per channel (`set_bot_permissions()`, `bot_permissions()`): 403 / 50001 without
   VIEW_CHANNEL, 403 / 50013 without SEND_MESSAGES (SEND_MESSAGES_IN_THREADS in threads),
   ATTACH_FILES, EMBED_LINKS, READ_MESSAGE_HISTORY; DMs to a user who does not accept them
   (`set_accepts_dms()`) fail with 403 / 50007. Interaction responses and follow-ups need none.
4. Commands: global and guild commands are kept side by side (`visible_commands()`,
   `duplicate_commands()`); `contexts`, `integration_types` and `dm_permission` are enforced.
5. Upload limit per guild (`set_upload_limit()`, boost tiers), sent as the interaction's
   `attachment_size_limit`; larger files fail with 413 / 40005.
6. Deleted messages (`delete_message()`) answer 404 / 10008 by bot token and by webhook token;
   an expired token (`expire_token()`) answers 401 / 50027.
7. Message `flags` are stored as sent (only the flags each endpoint accepts).
8. Threads and forum posts (`set_channel(parent_id=...)`) reach discord.py as `discord.Thread`.
9. `allowed_mentions` of every create and edit is recorded per message version (`pings()`,
   `could_ping()`, `messages_that_could_ping()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import mimetypes
import re
import secrets
import socket
import struct
import time
import urllib.parse
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import yarl
from aiohttp import BodyPartReader, WSMsgType, web

if TYPE_CHECKING:
    import discord

__all__ = [
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeUser",
    "Interaction",
    "RecordedRequest",
]

T = TypeVar("T")
ClientT = TypeVar("ClientT", bound="discord.Client")

DISCORD_EPOCH_MS = 1_420_070_400_000

# Gateway opcodes (https://discord.com/developers/docs/topics/opcodes-and-status-codes).
OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_GUILD_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11

# Gateway intents that gate the events the fake sends.
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

# Interaction types and callback (response) types.
INTERACTION_APPLICATION_COMMAND = 2
INTERACTION_MESSAGE_COMPONENT = 3
INTERACTION_AUTOCOMPLETE = 4
INTERACTION_MODAL_SUBMIT = 5
CALLBACK_CHANNEL_MESSAGE = 4
CALLBACK_DEFERRED_CHANNEL_MESSAGE = 5
CALLBACK_DEFERRED_UPDATE_MESSAGE = 6
CALLBACK_UPDATE_MESSAGE = 7
CALLBACK_AUTOCOMPLETE_RESULT = 8
CALLBACK_MODAL = 9

# Message flags (docs: resources/message "Message Flags").
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
FLAG_IS_VOICE_MESSAGE = 1 << 13
FLAG_IS_COMPONENTS_V2 = 1 << 15
# The flags a request may set; others are dropped. Create Message: "only SUPPRESS_EMBEDS,
# SUPPRESS_NOTIFICATIONS, IS_VOICE_MESSAGE, and IS_COMPONENTS_V2 can be set"; interaction
# responses and follow-ups add EPHEMERAL (docs: resources/message "Create Message",
# interactions/receiving-and-responding "Messages"); an edit may toggle SUPPRESS_EMBEDS and only
# set IS_COMPONENTS_V2 (docs: resources/message "Edit Message").
CREATE_FLAGS = (
    FLAG_SUPPRESS_EMBEDS
    | FLAG_SUPPRESS_NOTIFICATIONS
    | FLAG_IS_VOICE_MESSAGE
    | FLAG_IS_COMPONENTS_V2
)
INTERACTION_FLAGS = CREATE_FLAGS | FLAG_EPHEMERAL

# Message types.
MESSAGE_DEFAULT = 0
MESSAGE_REPLY = 19
MESSAGE_CHAT_INPUT_COMMAND = 20

# Channel types.
CHANNEL_GUILD_TEXT = 0
CHANNEL_DM = 1
CHANNEL_PUBLIC_THREAD = 11
CHANNEL_GUILD_FORUM = 15

# Interaction context types and application integration (installation) types
# (docs: interactions/receiving-and-responding "Interaction Context Types",
# resources/application "Application Integration Types").
CONTEXT_GUILD = 0
CONTEXT_BOT_DM = 1
INSTALL_GUILD = 0

# Permission bits (https://discord.com/developers/docs/topics/permissions).
PERM_ADMINISTRATOR = 1 << 3
PERM_MANAGE_GUILD = 1 << 5
PERM_ADD_REACTIONS = 1 << 6
PERM_VIEW_CHANNEL = 1 << 10
PERM_SEND_MESSAGES = 1 << 11
PERM_MANAGE_MESSAGES = 1 << 13
PERM_EMBED_LINKS = 1 << 14
PERM_ATTACH_FILES = 1 << 15
PERM_READ_MESSAGE_HISTORY = 1 << 16
PERM_MENTION_EVERYONE = 1 << 17
PERM_USE_EXTERNAL_EMOJIS = 1 << 18
PERM_USE_APPLICATION_COMMANDS = 1 << 31
PERM_CREATE_PUBLIC_THREADS = 1 << 35
PERM_SEND_MESSAGES_IN_THREADS = 1 << 38
PERM_ALL = (1 << 53) - 1
# A new server's @everyone role: it may also mention @everyone and talk in threads.
EVERYONE_PERMISSIONS = (
    PERM_ADD_REACTIONS
    | PERM_VIEW_CHANNEL
    | PERM_SEND_MESSAGES
    | PERM_EMBED_LINKS
    | PERM_ATTACH_FILES
    | PERM_READ_MESSAGE_HISTORY
    | PERM_MENTION_EVERYONE
    | PERM_USE_EXTERNAL_EMOJIS
    | PERM_USE_APPLICATION_COMMANDS
    | PERM_CREATE_PUBLIC_THREADS
    | PERM_SEND_MESSAGES_IN_THREADS
)
# What the tests can grant or deny the bot per channel, by discord.py's Permissions names.
BOT_CHANNEL_PERMISSIONS = {
    "view_channel": PERM_VIEW_CHANNEL,
    "send_messages": PERM_SEND_MESSAGES,
    "send_messages_in_threads": PERM_SEND_MESSAGES_IN_THREADS,
    "embed_links": PERM_EMBED_LINKS,
    "attach_files": PERM_ATTACH_FILES,
    "read_message_history": PERM_READ_MESSAGE_HISTORY,
    "mention_everyone": PERM_MENTION_EVERYONE,
}
ADMIN_PERMISSIONS = PERM_MANAGE_GUILD | PERM_MANAGE_MESSAGES

# Application command option types.
OPT_SUB_COMMAND = 1
OPT_SUB_COMMAND_GROUP = 2
OPT_STRING = 3
OPT_INTEGER = 4
OPT_BOOLEAN = 5
OPT_USER = 6
OPT_CHANNEL = 7
OPT_ROLE = 8
OPT_MENTIONABLE = 9
OPT_NUMBER = 10
OPT_ATTACHMENT = 11

# User, role and @everyone/@here mentions in message text (docs: reference "Message Formatting").
MENTION_PATTERN = re.compile(r"<@(?P<kind>[!&]?)(?P<id>\d+)>|@(?P<everyone>everyone|here)")
COMPONENT_TEXT_DISPLAY = 10

# Component types whose submitted state is a list of `values`, and how each value resolves:
# string select, user/role/mentionable/channel selects, file upload, checkbox group.
VALUE_KINDS = {
    3: OPT_STRING,
    5: OPT_USER,
    6: OPT_ROLE,
    7: OPT_MENTIONABLE,
    8: OPT_CHANNEL,
    19: OPT_ATTACHMENT,
    22: OPT_STRING,
}

MIB = 1024 * 1024
# "The default limit is 10 MiB for all users, but may be higher ... by the server's Boost Tier"
# (docs: reference "Uploading Files"); the per-tier sizes are discord.py's
# Guild._PREMIUM_GUILD_LIMITS (guild.py), which follow Discord's Server Boosting FAQ.
ATTACHMENT_SIZE_LIMIT = 10 * MIB
UPLOAD_LIMIT_BY_PREMIUM_TIER = {0: 10 * MIB, 1: 10 * MIB, 2: 50 * MIB, 3: 100 * MIB}
MAX_CONTENT_LENGTH = 2000
DEFAULT_TOKEN = "fake-bot-token"
# "You must send an initial response within 3 seconds of receiving the event. If the 3 second
# deadline is exceeded, the token will be invalidated." (docs: interactions/receiving-and-
# responding "Responding to an Interaction").
RESPONSE_DEADLINE = 3.0


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON response whose Content-Type is exactly `application/json`.

    discord.py's `json_or_text` (http.py) compares the header verbatim and treats anything else,
    including aiohttp's default `application/json; charset=utf-8`, as plain text."""
    return web.Response(
        body=_dumps(data).encode(),
        status=status,
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


def _error(status: int, message: str, code: int = 0, **extra: Any) -> web.Response:
    """A Discord-style JSON error body (`{"message": ..., "code": ...}`)."""
    return _json({"message": message, "code": code, **extra}, status=status)


def _form_error(path: str, code: str, message: str) -> web.Response:
    """400 Invalid Form Body, with the nested `errors` object Discord uses."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(path.split(".")):
        errors = {part: errors}
    return _error(400, "Invalid Form Body", 50035, errors=errors)


def _truthy(value: str | None) -> bool:
    # discord.py sends `wait=1`, `with_response=1`; Discord also accepts `true`.
    return value is not None and value.lower() in {"1", "true", "yes"}


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, GIF or JPEG, as Discord reports them for image attachments."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 <= len(data) and data[i] == 0xFF:
            marker = data[i + 1]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return width, height
            i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def _walk_components(components: list[dict[str, Any]] | None) -> Iterator[dict[str, Any]]:
    """Every component in a (possibly nested, components-v2) component tree."""
    for component in components or []:
        yield component
        yield from _walk_components(component.get("components"))
        for key in ("accessory", "component"):  # section accessory, modal label child
            if isinstance(component.get(key), dict):
                yield from _walk_components([component[key]])


class _Snowflakes:
    """Increasing, time-based snowflakes (ms since the Discord epoch << 22, plus a counter)."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> str:
        value = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22 | 1 << 17
        self._last = max(value, self._last + 1)
        return str(self._last)


# --------------------------------------------------------------------------------------------
# World model: users, guilds, channels
# --------------------------------------------------------------------------------------------


@dataclass
class FakeUser:
    id: str
    username: str
    global_name: str | None = None
    bot: bool = False
    accepts_dms: bool = True  # False: DMs from the bot fail with 50007 (see set_accepts_dms)

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "banner": None,
            "accent_color": None,
            "public_flags": 0,
            "flags": 0,
            "avatar_decoration_data": None,
        }
        if self.bot:
            data["bot"] = True
        return data


@dataclass
class FakeRole:
    id: str
    name: str
    permissions: int
    position: int = 0

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }


@dataclass
class FakeMember:
    user_id: str
    role_ids: list[str] = field(default_factory=list)
    nick: str | None = None
    joined_at: str = field(default_factory=_now_iso)


@dataclass
class FakeChannel:
    id: str
    name: str
    type: int = CHANNEL_GUILD_TEXT
    guild_id: str | None = None
    nsfw: bool = False
    topic: str | None = None
    position: int = 0
    recipient_id: str | None = None  # DM channels only
    parent_id: str | None = None  # threads and forum posts: the channel they live in
    owner_id: str | None = None  # threads: who started it
    created_at: str = field(default_factory=_now_iso)
    # The bot's member overwrite on this channel (threads have none: they use their parent's).
    bot_allow: int = 0
    bot_deny: int = 0

    @property
    def is_thread(self) -> bool:
        return self.type == CHANNEL_PUBLIC_THREAD

    def payload(self, fake: FakeDiscord) -> dict[str, Any]:
        if self.type == CHANNEL_DM:
            recipient = fake.users[self.recipient_id or ""]
            return {
                "id": self.id,
                "type": CHANNEL_DM,
                "last_message_id": None,
                "recipients": [recipient.payload()],
                "flags": 0,
            }
        if self.is_thread:
            # docs: resources/channel "Example Thread Channel".
            count = len(fake.messages(self.id))
            return {
                "id": self.id,
                "type": self.type,
                "guild_id": self.guild_id,
                "parent_id": self.parent_id,
                "owner_id": self.owner_id,
                "name": self.name,
                "last_message_id": None,
                "message_count": count,
                "total_message_sent": count,
                "member_count": 1,
                "rate_limit_per_user": 0,
                "flags": 0,
                "thread_metadata": {
                    "archived": False,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": self.created_at,
                    "locked": False,
                    "create_timestamp": self.created_at,
                },
            }
        overwrites = []
        if self.bot_allow or self.bot_deny:
            overwrites.append(
                {
                    "id": fake.bot_id,
                    "type": 1,
                    "allow": str(self.bot_allow),
                    "deny": str(self.bot_deny),
                }
            )
        data: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "guild_id": self.guild_id,
            "name": self.name,
            "position": self.position,
            "nsfw": self.nsfw,
            "topic": self.topic,
            "parent_id": None,
            "permission_overwrites": overwrites,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "flags": 0,
        }
        if self.type == CHANNEL_GUILD_FORUM:
            data.update(available_tags=[], default_reaction_emoji=None, default_forum_layout=0)
        return data


@dataclass
class FakeGuild:
    id: str
    name: str
    owner_id: str
    roles: dict[str, FakeRole] = field(default_factory=dict)
    members: dict[str, FakeMember] = field(default_factory=dict)
    locale: str = "en-US"
    joined_at: str = field(default_factory=_now_iso)
    premium_tier: int = 0  # boost tier 0-3
    upload_limit: int | None = None  # bytes; None: the boost tier's limit

    @property
    def attachment_size_limit(self) -> int:
        if self.upload_limit is not None:
            return self.upload_limit
        return UPLOAD_LIMIT_BY_PREMIUM_TIER[self.premium_tier]

    def permissions(self, user_id: str) -> int:
        """Base permissions of a member (no channel overwrites exist in the fake)."""
        if user_id == self.owner_id:
            return PERM_ALL
        member = self.members.get(user_id)
        perms = self.roles[self.id].permissions  # @everyone role has the guild's id
        for role_id in member.role_ids if member else []:
            perms |= self.roles[role_id].permissions
        return PERM_ALL if perms & PERM_ADMINISTRATOR else perms


# --------------------------------------------------------------------------------------------
# Records visible to tests
# --------------------------------------------------------------------------------------------


class RecordedRequest(NamedTuple):
    """One REST call received by the fake.

    `path` is relative to `/api/v10` and has no query string; `body` is the JSON body, or for
    multipart uploads `{"payload_json": ..., "files": [{"field", "filename", "content_type",
    "size"}]}`, or None. `status` is what the fake answered.
    """

    method: str
    path: str
    body: Any
    query: dict[str, str]
    status: int


@dataclass
class _Upload:
    index: int
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class _Call:
    """A parsed REST request handed to a route handler."""

    method: str
    path: str
    params: dict[str, str]
    query: Mapping[str, str]
    json: Any
    uploads: list[_Upload]


@dataclass
class _Ctx:
    """Who invokes an interaction, and where."""

    user: FakeUser
    channel: FakeChannel
    guild: FakeGuild | None


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    retry_after: float
    remaining: int
    is_global: bool


@dataclass
class Interaction:
    """An interaction the test dispatched, and how the bot answered it.

    `payload` is the exact INTERACTION_CREATE data sent. `response_type`/`response_data` are the
    bot's callback (type 4, 5, 6, 7, 8 or 9 and its `data`). `original` is the message behind
    `@original` (the reply, the deferred "thinking" message, or for type 6/7 on a component the
    message that carried the component); `followups` are the messages posted via the follow-up
    webhook (the first follow-up after a type 5 defer *is* the original message).
    `response_delay` is how long after dispatch the bot first called the callback endpoint;
    `late` says whether that was past the fake's `response_deadline` (and so refused).
    """

    fake: FakeDiscord = field(repr=False, compare=False)
    id: str
    token: str
    type: int
    payload: dict[str, Any]
    user_id: str
    channel_id: str
    guild_id: str | None
    response_type: int | None = None
    response_data: dict[str, Any] | None = None
    original_id: str | None = None
    followup_ids: list[str] = field(default_factory=list)
    dispatched_at: float = field(default_factory=time.monotonic)
    response_delay: float | None = None
    late: bool = False

    @property
    def responded(self) -> bool:
        return self.response_type is not None

    @property
    def original(self) -> dict[str, Any] | None:
        return None if self.original_id is None else self.fake.get_message(self.original_id)

    @property
    def followups(self) -> list[dict[str, Any]]:
        return [self.fake._messages[message_id] for message_id in self.followup_ids]

    async def wait_for_response(self, timeout: float = 5.0) -> Interaction:
        """Wait until the bot has called the interaction callback endpoint."""
        return await self.fake._wait(
            lambda: self if self.responded else None, timeout, f"a response to {self.id}"
        )

    async def wait_for_followup(
        self,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        *,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """Wait for a follow-up message (matching `predicate`) posted for this interaction."""

        def check() -> dict[str, Any] | None:
            return next((m for m in self.followups if predicate is None or predicate(m)), None)

        return await self.fake._wait(check, timeout, f"a follow-up to interaction {self.id}")


# --------------------------------------------------------------------------------------------
# Gateway sessions
# --------------------------------------------------------------------------------------------


class _Connection:
    """One gateway websocket; frames are sent in order by a writer task."""

    def __init__(self, ws: web.WebSocketResponse, compress: bool) -> None:
        self.ws = ws
        # zlib-stream: a single compression context for the whole connection; every gateway
        # message is flushed with Z_SYNC_FLUSH so it ends in 00 00 ff ff, which is how
        # discord.py's _ZlibDecompressionContext detects the end of a message.
        self.compressor = zlib.compressobj() if compress else None
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.closed = False
        self.closed_by_server = False
        self.writer = asyncio.create_task(self._write(), name="fake-discord-gateway-writer")

    def send(self, frame: dict[str, Any]) -> None:
        if not self.closed:
            self.queue.put_nowait(frame)

    async def _write(self) -> None:
        while (frame := await self.queue.get()) is not None:
            try:
                text = _dumps(frame)
                if self.compressor is None:
                    await self.ws.send_str(text)
                else:
                    data = self.compressor.compress(text.encode())
                    await self.ws.send_bytes(data + self.compressor.flush(zlib.Z_SYNC_FLUSH))
            except (ConnectionError, RuntimeError):
                pass  # socket gone; the session log keeps the frame for a RESUME
            finally:
                self.queue.task_done()
        self.queue.task_done()

    async def flush(self, timeout: float = 5.0) -> None:
        if not self.closed:
            await asyncio.wait_for(self.queue.join(), timeout)

    async def stop(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.queue.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(self.writer, 1.0)


@dataclass
class _Session:
    """A gateway session: outlives a dropped socket so the client can RESUME it."""

    id: str
    token: str
    intents: int
    connection: _Connection | None
    seq: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    shard: tuple[int, int] = (0, 1)  # (shard id, number of shards) from IDENTIFY

    def serves(self, guild_id: str | int | None) -> bool:
        """Whether this shard gets a guild's events: shard_id = (guild_id >> 22) % num_shards,
        and DMs go to shard 0 (https://discord.com/developers/docs/events/gateway#sharding)."""
        shard_id, count = self.shard
        if guild_id is None:
            return shard_id == 0
        return (int(guild_id) >> 22) % count == shard_id

    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        frame = {"op": OP_DISPATCH, "t": event, "s": self.seq, "d": data}
        self.log.append(frame)
        if self.connection is not None:
            self.connection.send(frame)


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------

Handler = Callable[[_Call], Awaitable[web.StreamResponse]]


class FakeDiscord:
    """A fake Discord (REST API v10 + gateway) on 127.0.0.1, for one test at a time.

    World defaults (ids are snowflake strings, also exposed as attributes): the bot user
    (`bot`, `bot_id`, equal to `application_id` as for every modern Discord app), one guild
    (`guild`, `guild_id`) owned by `owner` (who also has the "Admin" role, `admin_role_id`,
    carrying MANAGE_GUILD), two ordinary members `user` and `other_user`, a text channel
    `channel_id` and an NSFW text channel `nsfw_channel_id`.

    Options: `token` (None accepts any bot token; a string makes other tokens fail with 401 /
    gateway close 4004), `privileged_intents` (False, like a fresh application: IDENTIFY asking
    for members/presences/message content is closed with 4014), `gateway_compression` (honour
    `compress=zlib-stream`), `heartbeat_interval` (ms, sent in HELLO), `response_deadline`
    (seconds a bot has for its first interaction response; also a plain attribute, so a test
    can shorten it).
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        bot_name: str = "Easel",
        guild_name: str = "Easel Test Guild",
        privileged_intents: bool = False,
        gateway_compression: bool = True,
        heartbeat_interval: int = 41_250,
        response_deadline: float = RESPONSE_DEADLINE,
    ) -> None:
        self.token = token
        self.privileged_intents = privileged_intents
        self.gateway_compression = gateway_compression
        self.heartbeat_interval = heartbeat_interval
        self.response_deadline = response_deadline

        self._snowflakes = _Snowflakes()
        self._changed = asyncio.Event()  # replaced on every change; see _touch()
        # Stores and records.
        self._commands: dict[str | None, dict[str, dict[str, Any]]] = {}
        self.command_writes = 0
        self._messages: dict[str, dict[str, Any]] = {}
        self._attachments: dict[str, tuple[dict[str, Any], bytes]] = {}
        self._interactions: dict[str, Interaction] = {}
        self.late_responses: list[Interaction] = []  # refused: past the response deadline
        self._expired_tokens: set[str] = set()
        self._open_modals: dict[str, tuple[Interaction, dict[str, Any]]] = {}
        self.requests: list[RecordedRequest] = []
        self.unhandled: list[RecordedRequest] = []
        self.rate_limits_served: list[RecordedRequest] = []
        self._faults: list[_Fault] = []

        # Gateway state.
        self._sessions: dict[str, _Session] = {}
        self._connections: set[_Connection] = set()
        self.gateway_urls: list[str] = []
        self.gateway_ops: list[dict[str, Any]] = []
        self.identifies = 0
        # What GET /gateway/bot recommends; an AutoShardedClient opens this many sessions.
        self.shard_count = 1
        self.resumes = 0

        self.users: dict[str, FakeUser] = {}
        self.guilds: dict[str, FakeGuild] = {}
        self.channels: dict[str, FakeChannel] = {}

        self.bot = self.add_user(bot_name, bot=True, join=False)
        self.application_id = self.bot_id = self.bot.id

        owner_id = self._snowflakes.next()
        self.guild = self.add_guild(guild_name, owner_id=owner_id)
        self.guild_id = self.guild.id
        self.admin_role_id = next(r.id for r in self.guild.roles.values() if r.name == "Admin")
        self.owner = self.add_user("owner", user_id=owner_id, admin=True, global_name="Owner")
        self.user = self.add_user("alice", global_name="Alice")
        self.other_user = self.add_user("bob", global_name="Bob")
        self.owner_id, self.user_id, self.other_user_id = (
            self.owner.id,
            self.user.id,
            self.other_user.id,
        )
        self.channel_id = self.set_channel(name="general").id
        self.nsfw_channel_id = self.set_channel(name="nsfw-art", nsfw=True).id

        self._routes = self._build_routes()
        self._runner: web.AppRunner | None = None
        self._patch: contextlib.AbstractContextManager[None] | None = None
        self.port = 0

    # ----------------------------------------------------------------------------------------
    # Lifecycle
    # ----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway/"

    @property
    def resume_gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway-resume/"

    async def start(self) -> FakeDiscord:
        # Room for the largest boost tier's uploads, so the fake (not aiohttp) refuses them.
        app = web.Application(client_max_size=max(UPLOAD_LIMIT_BY_PREMIUM_TIER.values()) + MIB)
        app.router.add_get("/gateway/", self._handle_gateway)
        app.router.add_get("/gateway-resume/", self._handle_gateway)
        app.router.add_route("*", r"/api/v{version:\d+}/{tail:.*}", self._handle_api)
        app.router.add_get("/attachments/{attachment_id}/{filename}", self._handle_attachment)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        # Bind our own socket so the random port is known without poking at aiohttp internals.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        return self

    async def close(self) -> None:
        for connection in list(self._connections):
            await connection.stop()
            await connection.ws.close(code=1001, message=b"fake discord closing")
        self._connections.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        self._patch = self.patch_discord()
        self._patch.__enter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if self._patch is not None:
                self._patch.__exit__(None, None, None)
                self._patch = None
        finally:
            await self.close()

    @contextlib.contextmanager
    def patch_discord(self) -> Iterator[None]:
        """Point discord.py's REST base, default gateway and CDN at this fake; restore on exit."""
        import discord.asset
        import discord.gateway
        import discord.http

        route, gateway, asset = (
            discord.http.Route,
            discord.gateway.DiscordWebSocket,
            discord.asset.Asset,
        )
        saved = (route.BASE, gateway.DEFAULT_GATEWAY, asset.BASE)
        route.BASE = self.api_url
        gateway.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        asset.BASE = f"{self.url}/cdn"
        try:
            yield
        finally:
            route.BASE, gateway.DEFAULT_GATEWAY, asset.BASE = saved

    @contextlib.asynccontextmanager
    async def run_client(
        self,
        client: ClientT,
        *,
        token: str | None = None,
        ready_timeout: float = 5.0,
        guild_ready_timeout: float | None = 0.05,
    ) -> AsyncIterator[ClientT]:
        """Log `client` in, connect it and wait for on_ready; on exit close it and await its
        connect task (re-raising what that task raised, unless the body already failed).

        `guild_ready_timeout` overrides discord.py's 2 s wait for further GUILD_CREATEs before
        on_ready (None keeps the client's own); the fake sends them all right after READY.
        """
        if guild_ready_timeout is not None:
            client._connection.guild_ready_timeout = guild_ready_timeout
        try:
            await asyncio.wait_for(
                client.login(token or self.token or DEFAULT_TOKEN), ready_timeout
            )
        except BaseException:
            await client.close()  # login opened an aiohttp session
            raise
        runner = asyncio.create_task(client.connect(reconnect=True), name="fake-discord-client")
        ready = asyncio.create_task(client.wait_until_ready(), name="fake-discord-ready")
        try:
            done, _ = await asyncio.wait(
                {runner, ready}, timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if runner in done:
                runner.result()  # re-raise the connect error (PrivilegedIntentsRequired, ...)
                raise RuntimeError("the client stopped before it became ready")
            if ready not in done:
                raise TimeoutError(f"the client was not ready within {ready_timeout}s")
            yield client
        except BaseException:
            await self._stop_client(client, runner, ready, raise_errors=False)
            raise
        await self._stop_client(client, runner, ready, raise_errors=True)

    @staticmethod
    async def _stop_client(
        client: discord.Client,
        runner: asyncio.Task[None],
        ready: asyncio.Task[None],
        *,
        raise_errors: bool,
    ) -> None:
        ready.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ready
        await client.close()
        try:
            # connect() returns by itself once the client is closed.
            await asyncio.wait_for(runner, 5.0)
        except Exception:
            if raise_errors:
                raise

    # ----------------------------------------------------------------------------------------
    # World setup
    # ----------------------------------------------------------------------------------------

    def add_user(
        self,
        username: str,
        *,
        user_id: str | int | None = None,
        global_name: str | None = None,
        bot: bool = False,
        admin: bool = False,
        guild_id: str | int | None = None,
        join: bool = True,
    ) -> FakeUser:
        """Create a user who (with `join`) is a member of `guild_id` (default: the guild).

        `admin=True` gives them the guild's "Admin" role (MANAGE_GUILD)."""
        user = FakeUser(str(user_id or self._snowflakes.next()), username, global_name, bot)
        self.users[user.id] = user
        if join:
            guild = self.guilds[str(guild_id or self.guild_id)]
            admin_role = next(r.id for r in guild.roles.values() if r.name == "Admin")
            guild.members[user.id] = FakeMember(user.id, [admin_role] if admin else [])
        return user

    def add_guild(self, name: str, *, owner_id: str | int | None = None) -> FakeGuild:
        """Create a guild (with @everyone and Admin roles) that the bot is a member of."""
        guild_id = self._snowflakes.next()
        guild = FakeGuild(guild_id, name, str(owner_id or self._snowflakes.next()))
        # The @everyone role's id is the guild's id.
        guild.roles[guild_id] = FakeRole(guild_id, "@everyone", EVERYONE_PERMISSIONS, 0)
        admin = FakeRole(self._snowflakes.next(), "Admin", ADMIN_PERMISSIONS, 1)
        guild.roles[admin.id] = admin
        guild.members[self.bot.id] = FakeMember(self.bot.id)
        self.guilds[guild_id] = guild
        for session in self._live_sessions(INTENT_GUILDS, guild.id):
            session.dispatch("GUILD_CREATE", self._guild_create_payload(guild))
        return guild

    def set_channel(
        self,
        channel_id: str | int | None = None,
        *,
        name: str | None = None,
        nsfw: bool | None = None,
        topic: str | None = None,
        guild_id: str | int | None = None,
        channel_type: int | None = None,
        parent_id: str | int | None = None,
        owner: FakeUser | str | int | None = None,
        message: str | None = None,
    ) -> FakeChannel:
        """Create a channel in `guild_id` (default: the guild), or update an existing one;
        connected clients get CHANNEL_CREATE / CHANNEL_UPDATE (THREAD_CREATE / THREAD_UPDATE for
        threads).

        `channel_type` is a text channel (0, the default) or a forum (15). With `parent_id` the
        new channel is a public thread (type 11) under that channel, started by `owner`
        (default: `user`); under a forum it is a forum post, whose first message (text
        `message`, default the post's name) shares the thread's id, as on Discord (docs:
        topics/threads "Forums")."""
        existing = self.channels.get(str(channel_id)) if channel_id is not None else None
        if existing is not None:
            channel = existing
            channel.name = name if name is not None else channel.name
            channel.nsfw = nsfw if nsfw is not None else channel.nsfw
            channel.topic = topic if topic is not None else channel.topic
            self._dispatch_channel_event(channel, created=False)
            return channel
        if parent_id is not None:
            return self._new_thread(str(parent_id), name, owner, message, channel_id)
        if channel_type not in (None, CHANNEL_GUILD_TEXT, CHANNEL_GUILD_FORUM):
            raise ValueError(f"the fake makes text (0) and forum (15) channels, not {channel_type}")
        gid = str(guild_id or self.guild_id)
        position = sum(1 for c in self.channels.values() if c.guild_id == gid and not c.is_thread)
        channel = FakeChannel(
            str(channel_id or self._snowflakes.next()),
            name or f"channel-{position}",
            channel_type or CHANNEL_GUILD_TEXT,
            guild_id=gid,
            nsfw=bool(nsfw),
            topic=topic,
            position=position,
        )
        self.channels[channel.id] = channel
        self._dispatch_channel_event(channel, created=True)
        return channel

    def _new_thread(
        self,
        parent_id: str,
        name: str | None,
        owner: FakeUser | str | int | None,
        message: str | None,
        thread_id: str | int | None,
    ) -> FakeChannel:
        parent = self.channels[parent_id]
        if parent.type not in (CHANNEL_GUILD_TEXT, CHANNEL_GUILD_FORUM):
            raise ValueError(f"threads live in text or forum channels, not in {parent.name!r}")
        starter = self._user(owner)
        thread = FakeChannel(
            str(thread_id or self._snowflakes.next()),
            name or "thread",
            CHANNEL_PUBLIC_THREAD,
            guild_id=parent.guild_id,
            parent_id=parent.id,
            owner_id=starter.id,
        )
        self.channels[thread.id] = thread
        self._dispatch_channel_event(thread, created=True)
        if parent.type == CHANNEL_GUILD_FORUM:
            self._insert_message(
                thread, content=message or thread.name, author=starter, message_id=thread.id
            )
        return thread

    def _dispatch_channel_event(self, channel: FakeChannel, *, created: bool) -> None:
        data = channel.payload(self)
        if channel.is_thread:
            event = "THREAD_CREATE" if created else "THREAD_UPDATE"
            if created:
                data["newly_created"] = True
        else:
            event = "CHANNEL_CREATE" if created else "CHANNEL_UPDATE"
        for session in self._live_sessions(INTENT_GUILDS, data.get("guild_id")):
            session.dispatch(event, data)

    def dm_channel(self, user: FakeUser | str | int) -> FakeChannel:
        """The DM channel between the bot and `user` (created on first use)."""
        user_id = self._user(user).id
        for channel in self.channels.values():
            if channel.type == CHANNEL_DM and channel.recipient_id == user_id:
                return channel
        channel = FakeChannel(self._snowflakes.next(), "", CHANNEL_DM, recipient_id=user_id)
        self.channels[channel.id] = channel
        return channel

    def add_attachment(
        self,
        data: bytes,
        filename: str,
        content_type: str | None = None,
        *,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Store an uploaded file (e.g. for an ATTACHMENT slash option) and return its payload.

        The payload's `url`/`proxy_url` download the bytes from the fake."""
        return self._store_attachment(data, filename, content_type, description=description)

    def attachment_bytes(self, attachment: dict[str, Any] | str) -> bytes:
        """The raw bytes of an attachment (payload dict or id)."""
        attachment_id = attachment if isinstance(attachment, str) else str(attachment["id"])
        return self._attachments[attachment_id][1]

    def expire_token(self, token: str) -> None:
        """Make an interaction token behave as Discord does once it has expired.

        Webhook endpoints (follow-ups, @original) answer 401 `Invalid Webhook Token` (50027),
        as after 15 minutes; the callback endpoint answers 404 `Unknown interaction` (10062),
        as after the 3 s response window."""
        self._expired_tokens.add(token)

    def set_bot_permissions(self, channel_id: str | int, **grants: bool | None) -> int:
        """Grant (True) or deny (False) the bot permissions in a guild channel through a member
        overwrite, or drop that part of the overwrite (None); returns the bot's permissions there.

        Names are discord.py's: view_channel, send_messages, send_messages_in_threads,
        embed_links, attach_files, read_message_history, mention_everyone. Threads take their
        parent's permissions (docs: topics/permissions "Inherited Permissions (Threads)"), so
        set them on the parent. Connected clients get CHANNEL_UPDATE."""
        channel = self.channels[str(channel_id)]
        if channel.type == CHANNEL_DM or channel.is_thread:
            raise ValueError(f"{channel.name or 'a DM'} has no permission overwrites of its own")
        unknown = set(grants) - set(BOT_CHANNEL_PERMISSIONS)
        if unknown:
            raise KeyError(
                f"unknown permissions {sorted(unknown)}; known: {list(BOT_CHANNEL_PERMISSIONS)}"
            )
        for name, granted in grants.items():
            bit = BOT_CHANNEL_PERMISSIONS[name]
            channel.bot_allow &= ~bit
            channel.bot_deny &= ~bit
            if granted is True:
                channel.bot_allow |= bit
            elif granted is False:
                channel.bot_deny |= bit
        self._dispatch_channel_event(channel, created=False)
        return self.bot_permissions(channel.id)

    def bot_permissions(self, channel_id: str | int) -> int:
        """The bot's permissions in a guild channel or thread: the guild's base permissions with
        the bot's member overwrite applied (docs: topics/permissions "Permission Overwrites");
        a thread uses its parent's."""
        channel = self.channels[str(channel_id)]
        if channel.guild_id is None:
            raise ValueError("DM channels have no permissions; see set_accepts_dms()")
        base = self.guilds[channel.guild_id].permissions(self.bot.id)
        if base & PERM_ADMINISTRATOR:
            return PERM_ALL
        source = self.channels[channel.parent_id] if channel.parent_id else channel
        return (base & ~source.bot_deny) | source.bot_allow

    def set_accepts_dms(self, user: FakeUser | str | int, accepts: bool = True) -> None:
        """Whether `user` accepts DMs from the bot; if not, messages to their DM channel fail
        with 403 / 50007 "Cannot send messages to this user" (docs: topics/opcodes-and-status-
        codes "JSON Error Codes")."""
        self._user(user).accepts_dms = accepts

    def set_upload_limit(
        self,
        limit: int | None = None,
        *,
        premium_tier: int | None = None,
        guild_id: str | int | None = None,
    ) -> int:
        """Set a guild's (default: the guild's) boost tier and/or its upload limit in bytes
        (None: the tier's, 10 MiB up to tier 1); returns the limit now in force.

        A new tier reaches connected clients as GUILD_UPDATE, so discord.py's
        `Guild.filesize_limit` follows; interactions carry the limit as
        `attachment_size_limit`."""
        guild = self.guilds[str(guild_id or self.guild_id)]
        if premium_tier is not None:
            if premium_tier not in UPLOAD_LIMIT_BY_PREMIUM_TIER:
                raise ValueError(f"boost tiers are 0-3, not {premium_tier}")
            guild.premium_tier = premium_tier
            for session in self._live_sessions(INTENT_GUILDS, guild.id):
                session.dispatch("GUILD_UPDATE", self._guild_payload(guild))
        guild.upload_limit = limit
        return guild.attachment_size_limit

    def delete_message(self, message: dict[str, Any] | str | int) -> dict[str, Any]:
        """Delete a stored message as a moderator would (MESSAGE_DELETE reaches the bot); from
        then on it answers 404 / 10008 "Unknown Message" to the bot, whether it uses the bot
        token or an interaction token. Ephemeral messages cannot be deleted this way: only
        their user can dismiss them."""
        stored = self._stored_message(message)
        if stored["flags"] & FLAG_EPHEMERAL:
            raise ValueError(f"message {stored['id']} is ephemeral; a moderator cannot see it")
        self._delete_message(stored)
        self._touch()
        return stored

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int = 429,
        retry_after: float = 0.05,
        count: int = 1,
        *,
        is_global: bool = False,
    ) -> None:
        """Answer the next `count` REST calls matching `method` ("*" for any) and `path_regex`
        (re.search on the path after /api/v10, no query) with `status`: a Discord-style 429
        (rate-limit headers, `Via`, JSON `retry_after`) or a bare 5xx/4xx error."""
        self._faults.append(
            _Fault(method.upper(), re.compile(path_regex), status, retry_after, count, is_global)
        )

    # ----------------------------------------------------------------------------------------
    # Inspection helpers
    # ----------------------------------------------------------------------------------------

    def commands(self, guild_id: str | int | None = None) -> list[dict[str, Any]]:
        """The application commands currently registered globally or for `guild_id`."""
        scope = None if guild_id is None else str(guild_id)
        return list(self._commands.get(scope, {}).values())

    def find_command(self, name: str, guild_id: str | int | None = None) -> dict[str, Any] | None:
        return next((c for c in self.commands(guild_id) if c["name"] == name), None)

    def visible_commands(
        self, guild_id: str | int | None = None, *, dm: bool = False
    ) -> list[dict[str, Any]]:
        """What the command picker offers a member of `guild_id` (default: the guild): the
        global commands usable in a guild plus that guild's own; with `dm`, those usable in a
        DM with the bot. A global and a guild command may share a name and are then both
        listed (docs: interactions/application-commands "Registering a Command")."""
        context = CONTEXT_BOT_DM if dm else CONTEXT_GUILD
        shown = [c for c in self.commands() if self._command_refusal(c, context) is None]
        if not dm:
            shown += self.commands(guild_id or self.guild_id)
        return shown

    def duplicate_commands(self, guild_id: str | int | None = None) -> list[str]:
        """Names a member of `guild_id` sees more than once among commands of one type."""
        keys = [(c["type"], c["name"]) for c in self.visible_commands(guild_id)]
        return sorted({name for kind, name in keys if keys.count((kind, name)) > 1})

    def messages(
        self,
        channel_id: str | int | None = None,
        *,
        include_deleted: bool = False,
        visible_to: FakeUser | str | int | None = None,
    ) -> list[dict[str, Any]]:
        """Stored messages (oldest first), optionally of one channel, optionally only those
        `visible_to` a user would see (ephemeral messages are for their interaction's user).

        Each message is the Discord message object plus fake-only keys: `interaction_token`
        (None unless sent through an interaction), `allowed_mentions` (as last sent, None if
        absent), `history` (every version of the message, oldest first: content, embeds,
        components, attachments, flags, edited_timestamp, the `allowed_mentions` its request
        carried and `mentions_parsed`, whether that request set the text mentions are parsed
        from), `deleted`. Attachment dicts also hold their raw bytes under `data`."""
        viewer = None if visible_to is None else self._user(visible_to).id
        return sorted(
            (
                m
                for m in self._messages.values()
                if (channel_id is None or m["channel_id"] == str(channel_id))
                and (include_deleted or not m["deleted"])
                and (viewer is None or self.ephemeral_for(m) in (None, viewer))
            ),
            key=lambda m: int(m["id"]),
        )

    def is_ephemeral(self, message: dict[str, Any] | str | int) -> bool:
        return bool(self._any_message(message)["flags"] & FLAG_EPHEMERAL)

    def ephemeral_for(self, message: dict[str, Any] | str | int) -> str | None:
        """The id of the only user who sees an ephemeral message (its interaction's user);
        None for a message everyone in the channel sees."""
        stored = self._any_message(message)
        if not stored["flags"] & FLAG_EPHEMERAL:
            return None
        return str(stored["interaction_metadata"]["user"]["id"])

    def pings(self, message: dict[str, Any] | str | int, version: int = -1) -> list[str]:
        """The mentions in one version of a message (default: the latest) that notify someone,
        as `<@user_id>`, `<@&role_id>`, `@everyone` or `@here`.

        Discord's rules (docs: resources/message "Allowed Mentions Object"): without
        `allowed_mentions` a bot message parses every kind, an interaction response or webhook
        message only users; `parse` and the `users`/`roles` lists say which mentions in the
        text notify; @everyone/@here need MENTION_EVERYONE, a role needs MENTION_EVERYONE
        (the fake's roles are not mentionable); a reply notifies the replied-to author unless
        `replied_user` is false."""
        stored = self._any_message(message)
        snapshot = stored["history"][version]
        allowed = self._allowed_mentions(stored, snapshot)
        parse = set(allowed.get("parse") or [])
        users = {str(u) for u in allowed.get("users") or []}
        roles = {str(r) for r in allowed.get("roles") or []}
        guild = self.guilds.get(stored.get("guild_id") or "")
        can_mention_everyone = guild is None or bool(
            self.bot_permissions(stored["channel_id"]) & PERM_MENTION_EVERYONE
        )
        found: list[str] = []
        for match in MENTION_PATTERN.finditer(self._mention_text(snapshot)):
            if match["everyone"]:
                token = "@" + match["everyone"]
                notifies = "everyone" in parse and can_mention_everyone
            elif match["kind"] == "&":
                token = f"<@&{match['id']}>"
                known = guild is not None and match["id"] in guild.roles
                allowed_role = "roles" in parse or match["id"] in roles
                notifies = known and allowed_role and can_mention_everyone
            else:
                token = f"<@{match['id']}>"
                allowed_user = "users" in parse or match["id"] in users
                notifies = match["id"] in self.users and allowed_user
            if notifies and token not in found:
                found.append(token)
        replied = (stored.get("referenced_message") or {}).get("author", {}).get("id")
        explicit = snapshot["allowed_mentions"] is not None
        notify_replied = allowed.get("replied_user") or not explicit
        if replied and replied != self.bot_id and notify_replied and f"<@{replied}>" not in found:
            found.append(f"<@{replied}>")
        return found

    def could_ping(self, message: dict[str, Any] | str | int, version: int | None = None) -> bool:
        """Whether a version of a message (default: any) set text under `allowed_mentions` that
        would let some mention notify, whatever that text says: True unless the request carried
        `allowed_mentions` with an empty `parse`, no `users`, no `roles` and no `replied_user`
        (discord.py's `AllowedMentions.none()`). An edit that leaves the text alone keeps the
        mentions it had (docs: resources/message "Edit Message")."""
        stored = self._any_message(message)
        versions = stored["history"] if version is None else [stored["history"][version]]
        return any(self._version_could_ping(stored, v) for v in versions)

    def messages_that_could_ping(self) -> list[dict[str, Any]]:
        """Every message the bot sent (deleted ones included) of which some version
        `could_ping()`."""
        return [
            m
            for m in self.messages(include_deleted=True)
            if m["author"]["id"] == self.bot_id and self.could_ping(m)
        ]

    def _version_could_ping(self, stored: dict[str, Any], snapshot: dict[str, Any]) -> bool:
        if not snapshot["mentions_parsed"] or not self._mention_text(snapshot):
            return False
        allowed = self._allowed_mentions(stored, snapshot)
        return any(allowed.get(key) for key in ("parse", "users", "roles", "replied_user"))

    @staticmethod
    def _allowed_mentions(stored: dict[str, Any], snapshot: dict[str, Any]) -> dict[str, Any]:
        """The allowed mentions a version was parsed under: what its request carried, else
        Discord's default for the kind of message (docs: resources/message "Default Settings
        for Allowed Mentions")."""
        if snapshot["allowed_mentions"] is not None:
            return snapshot["allowed_mentions"]
        if stored.get("webhook_id"):
            return {"parse": ["users"]}
        return {"parse": ["users", "roles", "everyone"]}

    @staticmethod
    def _mention_text(snapshot: dict[str, Any]) -> str:
        """The text mentions are parsed from: content and text display components."""
        texts = [snapshot["content"] or ""]
        texts += [
            c.get("content") or ""
            for c in _walk_components(snapshot["components"])
            if c.get("type") == COMPONENT_TEXT_DISPLAY
        ]
        return "\n".join(t for t in texts if t)

    def get_message(self, message_id: str | int) -> dict[str, Any] | None:
        return self._messages.get(str(message_id))

    @property
    def interactions(self) -> list[Interaction]:
        return list(self._interactions.values())

    def mark(self) -> str:
        """A fresh snowflake: messages created later have larger ids (for `since=`)."""
        return self._snowflakes.next()

    def requests_to(self, method: str, path_regex: str) -> list[RecordedRequest]:
        pattern = re.compile(path_regex)
        return [
            r
            for r in self.requests
            if method in ("*", r.method) and pattern.search(r.path) is not None
        ]

    async def wait_for_message(
        self,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        *,
        channel_id: str | int | None = None,
        since: str | int | None = None,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """The first (oldest) stored message matching; waits until one exists."""

        def check() -> dict[str, Any] | None:
            for message in self.messages(channel_id):
                if since is not None and int(message["id"]) <= int(since):
                    continue
                if predicate is None or predicate(message):
                    return message
            return None

        return await self._wait(check, timeout, "a matching message")

    async def wait_for_edit(
        self,
        message_id: str | int | None = None,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        *,
        edits: int = 1,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """A message (`message_id`, or any) that has been edited at least `edits` times and
        matches `predicate`; waits until there is one."""

        def check() -> dict[str, Any] | None:
            candidates = (
                [self._messages.get(str(message_id))]
                if message_id is not None
                else self.messages(include_deleted=True)
            )
            for message in candidates:
                if message is None or len(message["history"]) <= edits:
                    continue
                if predicate is None or predicate(message):
                    return message
            return None

        return await self._wait(check, timeout, f"an edit of message {message_id or '(any)'}")

    async def wait_for_session(self, timeout: float = 5.0) -> None:
        """Wait until a client has identified (or resumed) on the gateway."""
        await self._wait(
            lambda: True if self._live_sessions() else None, timeout, "a gateway session"
        )

    async def _wait(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        """Re-run `check` each time the fake's state changes until it returns non-None."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changed
                    if (result := check()) is not None:
                        return result
                    await changed.wait()
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}") from None

    def _touch(self) -> None:
        """Wake every waiter: set the current event and start a fresh one."""
        self._changed.set()
        self._changed = asyncio.Event()

    # ----------------------------------------------------------------------------------------
    # Test-side dispatchers (the "Discord client" half)
    # ----------------------------------------------------------------------------------------

    async def slash(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        user: FakeUser | str | int | None = None,
        channel_id: str | int | None = None,
        guild_id: str | int | None = None,
        dm: bool = False,
        locale: str = "en-US",
        check_permissions: bool = True,
    ) -> Interaction:
        """Invoke a chat-input command as `user` (default: `self.user`).

        `name` may include subcommands ("settings show"). `options` maps option names to
        values; types come from the synced command (users as FakeUser/ids, channels as
        FakeChannel/ids, attachments as dicts from `add_attachment`). With
        `check_permissions`, a command the Discord client would hide from this user (missing
        `default_member_permissions`, NSFW command outside an NSFW channel) raises
        PermissionError; a command whose `contexts` / `integration_types` / `dm_permission`
        exclude the place it is used from always does, as Discord would not send that
        interaction. `dm=True` invokes it in the user's DM with the bot.
        """
        data, ctx, command = self._command_data(name, options or {}, user, channel_id, guild_id, dm)
        if check_permissions:
            self._check_command_visible(command, ctx)
        payload = self._interaction_payload(
            INTERACTION_APPLICATION_COMMAND, data, ctx, locale=locale
        )
        return await self._dispatch_interaction(payload, ctx)

    async def autocomplete(
        self,
        name: str,
        options: Mapping[str, Any],
        focused: str,
        *,
        user: FakeUser | str | int | None = None,
        channel_id: str | int | None = None,
        dm: bool = False,
    ) -> Interaction:
        """Send an autocomplete interaction (type 4) with option `focused` being typed."""
        data, ctx, _ = self._command_data(
            name, options, user, channel_id, None, dm, focused=focused, partial=True
        )
        payload = self._interaction_payload(INTERACTION_AUTOCOMPLETE, data, ctx)
        return await self._dispatch_interaction(payload, ctx)

    async def click(
        self,
        message: dict[str, Any] | str | int,
        custom_id: str,
        *,
        user: FakeUser | str | int | None = None,
        values: list[Any] | None = None,
    ) -> Interaction:
        """Press a button (or pick `values` in a select) on a stored message.

        The default user is whoever triggered the interaction that produced the message."""
        msg = self._stored_message(message)
        component = next(
            (c for c in _walk_components(msg["components"]) if c.get("custom_id") == custom_id),
            None,
        )
        if component is None:
            known = [
                c["custom_id"] for c in _walk_components(msg["components"]) if "custom_id" in c
            ]
            raise LookupError(f"message {msg['id']} has no component {custom_id!r}; has {known}")
        if component.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled and cannot be used")
        if user is None and "interaction_metadata" in msg:
            user = msg["interaction_metadata"]["user"]["id"]
        ctx = self._context(user, msg["channel_id"], None, dm=False)
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component["type"]}
        if component["type"] in VALUE_KINDS:
            resolved: dict[str, Any] = {}
            data["values"] = self._component_values(component["type"], values or [], resolved, ctx)
            if resolved:
                data["resolved"] = resolved
        payload = self._interaction_payload(
            INTERACTION_MESSAGE_COMPONENT, data, ctx, message=self._wire_message(msg)
        )
        return await self._dispatch_interaction(payload, ctx)

    async def submit_modal(
        self,
        custom_id: str,
        fields: Mapping[str, Any],
        *,
        user: FakeUser | str | int | None = None,
        message: dict[str, Any] | str | int | None = None,
    ) -> Interaction:
        """Submit a modal the bot opened (callback type 9), `fields` mapping input custom_ids to
        values (str for text inputs, lists for selects/file uploads).

        The submit mirrors the modal's layout (action rows or labels) as Discord does; required
        inputs left out raise ValueError, unknown ones KeyError."""
        try:
            opener, modal = self._open_modals[custom_id]
        except KeyError:
            raise LookupError(f"the bot has not opened a modal {custom_id!r}") from None
        ctx = self._context(user or opener.user_id, opener.channel_id, None, dm=False)
        remaining = dict(fields)
        resolved: dict[str, Any] = {}

        def submitted(component: dict[str, Any]) -> dict[str, Any]:
            cid = component.get("custom_id")
            out: dict[str, Any] = {"type": component["type"], "custom_id": cid}
            if "id" in component:
                out["id"] = component["id"]
            if component["type"] in VALUE_KINDS:
                raw = remaining.pop(cid, [])
                out["values"] = self._component_values(component["type"], raw, resolved, ctx)
                return out
            prefilled = component.get("value")
            unfilled = cid not in remaining and not prefilled
            if component["type"] == 4 and component.get("required", True) and unfilled:
                raise ValueError(f"required modal field {cid!r} was not filled in")
            out["value"] = remaining.pop(cid, prefilled or "")
            return out

        components: list[dict[str, Any]] = []
        for top in modal.get("components", []):
            if top["type"] == 1:  # action row
                components.append(
                    {"type": 1, "components": [submitted(c) for c in top["components"]]}
                )
            elif top["type"] == 18:  # label wrapping one input
                label = {"type": 18, "component": submitted(top["component"])}
                if "id" in top:
                    label["id"] = top["id"]
                components.append(label)
        if remaining:
            raise KeyError(f"modal {custom_id!r} has no inputs {sorted(remaining)}")
        data: dict[str, Any] = {"custom_id": custom_id, "components": components}
        if resolved:
            data["resolved"] = resolved
        if message is None:  # a modal opened from a component carries that message along
            wire = opener.payload.get("message")
        else:
            wire = self._wire_message(self._stored_message(message))
        del self._open_modals[custom_id]  # a submitted modal is closed
        payload = self._interaction_payload(INTERACTION_MODAL_SUBMIT, data, ctx, message=wire)
        return await self._dispatch_interaction(payload, ctx)

    async def disconnect_gateway(self, code: int = 4000, *, invalidate: bool = False) -> None:
        """Close every gateway socket with `code` (discord.py then reconnects and RESUMEs).

        With `invalidate`, the sessions are forgotten so the RESUME gets INVALID_SESSION."""
        for connection in list(self._connections):
            connection.closed_by_server = True
            await connection.stop()
            await connection.ws.close(code=code, message=b"fake discord disconnect")
        if invalidate:
            self._sessions.clear()

    # ----------------------------------------------------------------------------------------
    # Interaction payload building
    # ----------------------------------------------------------------------------------------

    def _any_message(self, message: dict[str, Any] | str | int) -> dict[str, Any]:
        """A stored message (payload dict or id), deleted or not."""
        message_id = str(message["id"] if isinstance(message, dict) else message)
        stored = self._messages.get(message_id)
        if stored is None:
            raise LookupError(f"no message {message_id} in the fake")
        return stored

    def _stored_message(self, message: dict[str, Any] | str | int) -> dict[str, Any]:
        stored = self._any_message(message)
        if stored["deleted"]:
            raise LookupError(f"message {stored['id']} was deleted")
        return stored

    def _user(self, user: FakeUser | str | int | None) -> FakeUser:
        if user is None:
            return self.user
        if isinstance(user, FakeUser):
            return user
        return self.users[str(user)]

    def _context(
        self,
        user: FakeUser | str | int | None,
        channel_id: str | int | None,
        guild_id: str | int | None,
        dm: bool,
    ) -> _Ctx:
        fake_user = self._user(user)
        if dm:
            return _Ctx(fake_user, self.dm_channel(fake_user), None)
        if channel_id is None:
            gid = str(guild_id or self.guild_id)
            channel = next(c for c in self.channels.values() if c.guild_id == gid)
        else:
            channel = self.channels[str(channel_id)]
        if channel.type == CHANNEL_DM:
            return _Ctx(fake_user, channel, None)
        guild = self.guilds[channel.guild_id or ""]
        if fake_user.id not in guild.members:
            raise LookupError(f"user {fake_user.username} is not a member of guild {guild.name}")
        return _Ctx(fake_user, channel, guild)

    def _member_payload(
        self, guild: FakeGuild, user_id: str, *, permissions: bool = False, user: bool = True
    ) -> dict[str, Any]:
        member = guild.members[user_id]
        data: dict[str, Any] = {
            "roles": list(member.role_ids),  # never includes @everyone
            "nick": member.nick,
            "avatar": None,
            "banner": None,
            "joined_at": member.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        if user:
            data["user"] = self.users[user_id].payload()
        if permissions:  # interactions carry the member's resolved channel permissions
            data["permissions"] = str(guild.permissions(user_id))
        return data

    def _interaction_payload(
        self,
        itype: int,
        data: dict[str, Any],
        ctx: _Ctx,
        *,
        message: dict[str, Any] | None = None,
        locale: str = "en-US",
    ) -> dict[str, Any]:
        interaction_id = self._snowflakes.next()
        channel = ctx.channel.payload(self)
        payload: dict[str, Any] = {
            "id": interaction_id,
            "application_id": self.application_id,
            "type": itype,
            "data": data,
            "token": "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48),
            "version": 1,
            "channel_id": ctx.channel.id,
            "channel": channel,
            "locale": locale,  # the invoking user's client language
            "entitlements": [],
            "attachment_size_limit": self._upload_limit(ctx.channel),
        }
        if ctx.guild is not None:
            guild = ctx.guild
            channel["permissions"] = str(guild.permissions(ctx.user.id))
            payload.update(
                guild_id=guild.id,
                guild={"id": guild.id, "locale": guild.locale, "features": []},
                guild_locale=guild.locale,
                member=self._member_payload(guild, ctx.user.id, permissions=True),
                # "permissions the app has in the source location of the interaction"
                app_permissions=str(self.bot_permissions(ctx.channel.id)),
                # "0" = GUILD_INSTALL; the interaction context 0 = GUILD, 1 = BOT_DM.
                authorizing_integration_owners={"0": guild.id},
                context=0,
            )
        else:
            payload.update(
                user=ctx.user.payload(),
                app_permissions=str(EVERYONE_PERMISSIONS),
                authorizing_integration_owners={"0": "0"},
                context=1,
            )
        if message is not None:
            payload["message"] = message
        return payload

    def _upload_limit(self, channel: FakeChannel) -> int:
        """Bytes one file may have in `channel`: its guild's limit, 10 MiB in DMs."""
        if channel.guild_id is None:
            return ATTACHMENT_SIZE_LIMIT
        return self.guilds[channel.guild_id].attachment_size_limit

    async def _dispatch_interaction(self, payload: dict[str, Any], ctx: _Ctx) -> Interaction:
        guild_id = ctx.guild.id if ctx.guild else None
        sessions = [s for s in self._sessions.values() if s.serves(guild_id)]
        if not sessions:
            raise RuntimeError("no bot session is connected to the fake gateway")
        interaction = Interaction(
            fake=self,
            id=payload["id"],
            token=payload["token"],
            type=payload["type"],
            payload=payload,
            user_id=ctx.user.id,
            channel_id=ctx.channel.id,
            guild_id=ctx.guild.id if ctx.guild else None,
        )
        self._interactions[interaction.id] = interaction
        for session in sessions:  # INTERACTION_CREATE needs no intent
            session.dispatch("INTERACTION_CREATE", payload)
        await self._flush()
        return interaction

    def _find_command_for(self, root: str, ctx: _Ctx) -> tuple[dict[str, Any] | None, str | None]:
        """The synced command named `root` visible in ctx: guild commands shadow global ones."""
        if ctx.guild is not None and (cmd := self.find_command(root, ctx.guild.id)):
            return cmd, ctx.guild.id
        return self.find_command(root), None

    def _command_data(
        self,
        name: str,
        options: Mapping[str, Any],
        user: FakeUser | str | int | None,
        channel_id: str | int | None,
        guild_id: str | int | None,
        dm: bool,
        *,
        focused: str | None = None,
        partial: bool = False,
    ) -> tuple[dict[str, Any], _Ctx, dict[str, Any] | None]:
        """(interaction `data`, context, the synced command or None) for a command call."""
        ctx = self._context(user, channel_id, guild_id, dm)
        root, *path = name.split()
        command, scope = self._find_command_for(root, ctx)
        if command is None and dm and any(self.find_command(root, g) for g in self.guilds):
            raise PermissionError(f"/{root} is a guild command and cannot be used in DMs")
        if command is not None and scope is None:
            context = CONTEXT_GUILD if ctx.guild is not None else CONTEXT_BOT_DM
            if (refusal := self._command_refusal(command, context)) is not None:
                raise PermissionError(refusal)
        resolved: dict[str, Any] = {}
        definitions = command.get("options", []) if command else None
        # Walk down subcommand groups / subcommands; the innermost option list gets the values.
        nested: list[dict[str, Any]] = []
        container = nested
        for sub in path:
            sub_def = None
            if definitions is not None:
                sub_def = next((o for o in definitions if o["name"] == sub), None)
                if sub_def is None or sub_def["type"] not in (
                    OPT_SUB_COMMAND,
                    OPT_SUB_COMMAND_GROUP,
                ):
                    raise LookupError(f"/{root} has no subcommand {sub!r}")
                definitions = sub_def.get("options", [])
            if sub_def is not None:
                kind = sub_def["type"]
            else:
                kind = OPT_SUB_COMMAND if sub == path[-1] else OPT_SUB_COMMAND_GROUP
            entry: dict[str, Any] = {"name": sub, "type": kind, "options": []}
            container.append(entry)
            container = entry["options"]
        container.extend(
            self._encode_options(definitions, options, resolved, ctx, focused, partial)
        )
        data: dict[str, Any] = {
            "id": command["id"] if command else self._snowflakes.next(),
            "name": root,
            "type": 1,
        }
        if nested:
            data["options"] = nested
        if resolved:
            data["resolved"] = resolved
        if scope is not None:
            data["guild_id"] = scope  # discord.py uses it to pick the guild command tree
        return data, ctx, command

    def _encode_options(
        self,
        definitions: list[dict[str, Any]] | None,
        values: Mapping[str, Any],
        resolved: dict[str, Any],
        ctx: _Ctx,
        focused: str | None,
        partial: bool,
    ) -> list[dict[str, Any]]:
        encoded = []
        by_name = {d["name"]: d for d in definitions or []}
        for name, value in values.items():
            definition = by_name.get(name)
            if definitions is not None and definition is None:
                raise LookupError(f"unknown option {name!r}; the command has {sorted(by_name)}")
            kind = definition["type"] if definition else self._infer_option_type(value)
            option: dict[str, Any] = {"name": name, "type": kind}
            if name == focused:
                option["value"], option["focused"] = str(value), True
            else:
                option["value"] = self._option_value(kind, value, resolved, ctx)
                choices = (definition or {}).get("choices")
                if choices and option["value"] not in [c["value"] for c in choices]:
                    raise ValueError(f"{value!r} is not one of the choices for {name!r}")
            encoded.append(option)
        if not partial:
            for definition in definitions or []:
                if definition.get("required") and definition["name"] not in values:
                    raise ValueError(f"required option {definition['name']!r} is missing")
        return encoded

    @staticmethod
    def _infer_option_type(value: Any) -> int:
        if isinstance(value, bool):
            return OPT_BOOLEAN
        if isinstance(value, int):
            return OPT_INTEGER
        if isinstance(value, float):
            return OPT_NUMBER
        if isinstance(value, FakeUser):
            return OPT_USER
        if isinstance(value, FakeChannel):
            return OPT_CHANNEL
        if isinstance(value, dict) and "filename" in value:
            return OPT_ATTACHMENT
        return OPT_STRING

    def _component_values(
        self, component_type: int, values: list[Any], resolved: dict[str, Any], ctx: _Ctx
    ) -> list[Any]:
        kind = VALUE_KINDS[component_type]
        return [self._option_value(kind, value, resolved, ctx) for value in values]

    def _option_value(self, kind: int, value: Any, resolved: dict[str, Any], ctx: _Ctx) -> Any:
        """An option's wire value; id-typed values also add their `resolved` entry."""
        if kind == OPT_STRING:
            return str(value)
        if kind == OPT_INTEGER:
            return int(value)
        if kind == OPT_NUMBER:
            return float(value)
        if kind == OPT_BOOLEAN:
            return bool(value)
        if kind == OPT_MENTIONABLE:
            is_user = isinstance(value, FakeUser) or str(value) in self.users
            kind = OPT_USER if is_user else OPT_ROLE
        if kind == OPT_USER:
            user = self._user(value)
            resolved.setdefault("users", {})[user.id] = user.payload()
            if ctx.guild is not None and user.id in ctx.guild.members:
                member = self._member_payload(ctx.guild, user.id, permissions=True, user=False)
                resolved.setdefault("members", {})[user.id] = member
            return user.id
        if kind == OPT_CHANNEL:
            channel = value if isinstance(value, FakeChannel) else self.channels[str(value)]
            data = channel.payload(self)
            data["permissions"] = str(ctx.guild.permissions(ctx.user.id) if ctx.guild else 0)
            resolved.setdefault("channels", {})[channel.id] = data
            return channel.id
        if kind == OPT_ROLE:
            if ctx.guild is None or str(value) not in ctx.guild.roles:
                raise LookupError(f"no role {value!r} where the interaction happens")
            role = ctx.guild.roles[str(value)]
            resolved.setdefault("roles", {})[role.id] = role.payload()
            return role.id
        if kind == OPT_ATTACHMENT:  # an add_attachment() dict, or (data, filename[, type])
            attachment = value if isinstance(value, dict) else self.add_attachment(*value)
            resolved.setdefault("attachments", {})[str(attachment["id"])] = attachment
            return str(attachment["id"])
        return value

    @staticmethod
    def _command_refusal(command: dict[str, Any], context: int) -> str | None:
        """Why Discord would not offer a global command in an interaction context (guild or
        DM with the bot), or None. `contexts` lists where it can be used (null: everywhere),
        the deprecated `dm_permission` false keeps it out of DMs, and `integration_types` lists
        the installations it serves: the fake application is installed to guilds only
        (docs: interactions/application-commands "Contexts")."""
        name = command["name"]
        contexts = command.get("contexts")
        if contexts is not None and context not in contexts:
            where = "in a guild" if context == CONTEXT_GUILD else "in DMs"
            return f"/{name} is not available {where} (contexts {contexts})"
        if context == CONTEXT_BOT_DM and command.get("dm_permission") is False:
            return f"/{name} is not available in DMs (dm_permission false)"
        installs = command.get("integration_types")
        if installs is not None and INSTALL_GUILD not in installs:
            return f"/{name} is not for guild installs (integration_types {installs})"
        return None

    def _check_command_visible(self, command: dict[str, Any] | None, ctx: _Ctx) -> None:
        """Refuse what the Discord client would hide from this user."""
        if command is None:
            return
        required = command.get("default_member_permissions")
        if ctx.guild is not None and required is not None:
            granted, required = ctx.guild.permissions(ctx.user.id), int(required)
            if required == 0:  # "0" hides the command from everyone but administrators
                allowed = bool(granted & PERM_ADMINISTRATOR)
            else:
                allowed = granted & required == required
            if not allowed:
                raise PermissionError(
                    f"{ctx.user.username} lacks permissions {required} for /{command['name']}"
                )
        if command.get("nsfw") and ctx.guild is not None and not self._is_nsfw(ctx.channel):
            raise PermissionError(f"/{command['name']} is NSFW and {ctx.channel.name} is not")

    def _is_nsfw(self, channel: FakeChannel) -> bool:
        """Threads are as NSFW as their parent channel."""
        return (self.channels[channel.parent_id] if channel.parent_id else channel).nsfw

    # ----------------------------------------------------------------------------------------
    # Gateway
    # ----------------------------------------------------------------------------------------

    def _live_sessions(self, intent: int = 0, guild: Any = ...) -> list[_Session]:
        """Connected sessions with ``intent``; given ``guild`` (an id, or None for DMs), only the
        shard that serves it."""
        return [
            s
            for s in self._sessions.values()
            if s.connection is not None
            and (not intent or s.intents & intent)
            and (guild is ... or s.serves(guild))
        ]

    async def _flush(self) -> None:
        for connection in list(self._connections):
            await connection.flush()

    def _guild_payload(self, guild: FakeGuild) -> dict[str, Any]:
        """The guild object (GET /guilds/{id}, GUILD_UPDATE)."""
        return {
            "id": guild.id,
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": guild.owner_id,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": guild.premium_tier,
            "premium_subscription_count": 0,
            "preferred_locale": guild.locale,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "features": [],
            "roles": [r.payload() for r in guild.roles.values()],
            "emojis": [],
            "stickers": [],
            "premium_progress_bar_enabled": False,
        }

    def _guild_channels(self, guild: FakeGuild, *, threads: bool) -> list[dict[str, Any]]:
        return [
            c.payload(self)
            for c in self.channels.values()
            if c.guild_id == guild.id and c.is_thread == threads
        ]

    def _guild_create_payload(self, guild: FakeGuild) -> dict[str, Any]:
        channels = self._guild_channels(guild, threads=False)
        for channel in channels:
            del channel["guild_id"]  # GUILD_CREATE channels omit guild_id
        return {
            **self._guild_payload(guild),
            "joined_at": guild.joined_at,
            "large": False,
            "unavailable": False,
            "member_count": len(guild.members),
            "members": [self._member_payload(guild, uid) for uid in guild.members],
            "channels": channels,
            # Active threads are sent apart from channels (docs: topics/threads "Gateway Events").
            "threads": self._guild_channels(guild, threads=True),
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    async def _handle_gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self.gateway_urls.append(str(request.url.with_scheme("ws")))
        compress = self.gateway_compression and request.query.get("compress") == "zlib-stream"
        connection = _Connection(ws, compress)
        self._connections.add(connection)
        connection.send(
            {
                "op": OP_HELLO,
                "d": {"heartbeat_interval": self.heartbeat_interval},
                "s": None,
                "t": None,
            }
        )
        session: _Session | None = None
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                try:
                    frame = json.loads(msg.data)
                except ValueError:
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                self.gateway_ops.append(frame)
                op, data = frame.get("op"), frame.get("d")
                if op == OP_HEARTBEAT:
                    connection.send({"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None})
                elif op == OP_IDENTIFY:
                    session = await self._identify(connection, data)
                elif op == OP_RESUME:
                    session = await self._resume(connection, data)
                elif op == OP_REQUEST_GUILD_MEMBERS and session is not None:
                    self._send_member_chunk(session, data)
                if ws.closed:
                    break
                self._touch()
        finally:
            await connection.stop()
            self._connections.discard(connection)
            if session is not None and session.connection is connection:
                session.connection = None
                # A client that closes with 1000/1001 ends its session (Discord invalidates
                # it); any other close code leaves it resumable. (Checked only for client-side
                # closes: aiohttp reports 1000 after a close the server started.)
                if not connection.closed_by_server and ws.close_code in (1000, 1001):
                    self._sessions.pop(session.id, None)
            self._touch()
        return ws

    async def _identify(self, connection: _Connection, data: dict[str, Any]) -> _Session | None:
        intents = int(data.get("intents", 0))
        if self.token is not None and data.get("token") != self.token:
            await connection.stop()
            await connection.ws.close(code=4004, message=b"Authentication failed.")
            return None
        if intents & PRIVILEGED_INTENTS and not self.privileged_intents:
            await connection.stop()
            await connection.ws.close(code=4014, message=b"Disallowed intent(s).")
            return None
        self.identifies += 1
        session = _Session(secrets.token_hex(16), data.get("token", ""), intents, connection)
        if "shard" in data:
            session.shard = (int(data["shard"][0]), int(data["shard"][1]))
        self._sessions[session.id] = session
        ready = {
            "v": 10,
            "user": {**self.bot.payload(), "verified": True, "mfa_enabled": False},
            "guilds": [
                {"id": gid, "unavailable": True} for gid in self.guilds if session.serves(gid)
            ],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.resume_gateway_url,
            "application": {"id": self.application_id, "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["local"],
            "user_settings": {},
        }
        if "shard" in data:
            ready["shard"] = data["shard"]
        session.dispatch("READY", ready)
        if intents & INTENT_GUILDS:
            for guild in self.guilds.values():
                if session.serves(guild.id):
                    session.dispatch("GUILD_CREATE", self._guild_create_payload(guild))
        return session

    async def _resume(self, connection: _Connection, data: dict[str, Any]) -> _Session | None:
        session = self._sessions.get(data.get("session_id") or "")
        if session is None or session.token != data.get("token"):
            # d=false: the session cannot be resumed; discord.py re-IDENTIFYs.
            connection.send({"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
            return None
        self.resumes += 1
        if session.connection is not None:
            await session.connection.stop()
        session.connection = connection
        # Replay what the client missed, then RESUMED.
        last_seen = data.get("seq") or 0
        for frame in session.log:
            if frame["s"] > last_seen:
                connection.send(frame)
        session.dispatch("RESUMED", {})
        return session

    def _send_member_chunk(self, session: _Session, data: dict[str, Any]) -> None:
        guild = self.guilds.get(str(data.get("guild_id")))
        if guild is None:
            return
        session.dispatch(
            "GUILD_MEMBERS_CHUNK",
            {
                "guild_id": guild.id,
                "members": [self._member_payload(guild, uid) for uid in guild.members],
                "chunk_index": 0,
                "chunk_count": 1,
                "nonce": data.get("nonce"),
            },
        )

    def _dispatch_message_event(self, event: str, message: dict[str, Any]) -> None:
        """MESSAGE_CREATE/UPDATE/DELETE to sessions whose intents cover the channel."""
        if message["flags"] & FLAG_EPHEMERAL:
            return  # ephemeral messages never reach the gateway
        guild_id = message.get("guild_id")
        intent = INTENT_GUILD_MESSAGES if guild_id else INTENT_DIRECT_MESSAGES
        if event == "MESSAGE_DELETE":
            data: dict[str, Any] = {"id": message["id"], "channel_id": message["channel_id"]}
            if guild_id:
                data["guild_id"] = guild_id
        else:
            data = self._wire_message(message)
        for session in self._live_sessions(intent, guild_id):
            session.dispatch(event, data)

    # ----------------------------------------------------------------------------------------
    # REST plumbing
    # ----------------------------------------------------------------------------------------

    def _build_routes(self) -> list[tuple[str, re.Pattern[str], Handler, bool]]:
        app = r"(?P<app_id>\d+)"
        guild = r"(?P<guild_id>\d+)"
        channel = r"(?P<channel_id>\d+)"
        message = r"(?P<message_id>\d+)"
        token = r"(?P<token>[^/]+)"
        webhook_message = rf"/webhooks/{app}/{token}/messages/(?P<message_id>\d+|@original)"
        # (method, path regex, handler, needs bot authorization)
        table: list[tuple[str, str, Handler, bool]] = [
            ("GET", r"/gateway", self._get_gateway, False),
            ("GET", r"/gateway/bot", self._get_gateway_bot, True),
            ("GET", r"/users/@me", self._get_me, True),
            ("GET", r"/users/(?P<user_id>\d+)", self._get_user, True),
            ("POST", r"/users/@me/channels", self._create_dm, True),
            ("GET", r"/oauth2/applications/@me", self._get_application, True),
            ("GET", r"/applications/@me", self._get_application, True),
            (
                "POST",
                r"/interactions/(?P<interaction_id>\d+)/" + token + "/callback",
                self._interaction_callback,
                False,
            ),
            ("POST", rf"/webhooks/{app}/{token}", self._execute_webhook, False),
            ("GET", webhook_message, self._get_webhook_message, False),
            ("PATCH", webhook_message, self._edit_webhook_message, False),
            ("DELETE", webhook_message, self._delete_webhook_message, False),
            ("GET", rf"/channels/{channel}", self._get_channel, True),
            ("GET", rf"/channels/{channel}/messages", self._list_messages, True),
            ("POST", rf"/channels/{channel}/messages", self._create_message, True),
            ("GET", rf"/channels/{channel}/messages/{message}", self._get_channel_message, True),
            ("PATCH", rf"/channels/{channel}/messages/{message}", self._edit_channel_message, True),
            (
                "DELETE",
                rf"/channels/{channel}/messages/{message}",
                self._delete_channel_message,
                True,
            ),
            ("POST", rf"/channels/{channel}/typing", self._no_content, True),
            (
                "PUT",
                rf"/channels/{channel}/messages/{message}/reactions/[^/]+/@me",
                self._no_content,
                True,
            ),
            (
                "DELETE",
                rf"/channels/{channel}/messages/{message}/reactions/[^/]+/@me",
                self._no_content,
                True,
            ),
            ("GET", rf"/guilds/{guild}", self._get_guild, True),
            ("GET", rf"/guilds/{guild}/channels", self._get_guild_channels, True),
            ("GET", rf"/guilds/{guild}/roles", self._get_guild_roles, True),
            ("GET", rf"/guilds/{guild}/members", self._list_members, True),
            ("GET", rf"/guilds/{guild}/members/(?P<user_id>\d+)", self._get_member, True),
        ]
        for scope in (rf"/applications/{app}", rf"/applications/{app}/guilds/{guild}"):
            command = rf"{scope}/commands/(?P<command_id>\d+)"
            table += [
                ("GET", rf"{scope}/commands", self._list_commands, True),
                ("PUT", rf"{scope}/commands", self._bulk_overwrite_commands, True),
                ("POST", rf"{scope}/commands", self._upsert_command, True),
                ("GET", command, self._get_command, True),
                ("PATCH", command, self._edit_command, True),
                ("DELETE", command, self._delete_command, True),
            ]
        return [(m, re.compile(p), h, auth) for m, p, h, auth in table]

    async def _read_body(self, request: web.Request) -> tuple[Any, list[_Upload], Any]:
        """(json, uploads, summary) of a JSON or multipart (payload_json + files[n]) body."""
        if request.content_type.startswith("multipart/"):
            payload: Any = None
            uploads: list[_Upload] = []
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue  # no nested multiparts in Discord uploads
                if part.name == "payload_json":
                    payload = json.loads(await part.text())
                elif part.name and (match := re.fullmatch(r"files\[(\d+)\]", part.name)):
                    data = bytes(await part.read())
                    content_type = part.headers.get("Content-Type")
                    uploads.append(
                        _Upload(int(match[1]), part.filename or "file", content_type, data)
                    )
            summary = {
                "payload_json": payload,
                "files": [
                    {
                        "field": f"files[{u.index}]",
                        "filename": u.filename,
                        "content_type": u.content_type,
                        "size": len(u.data),
                    }
                    for u in uploads
                ],
            }
            return payload, uploads, summary
        raw = await request.read()
        if not raw:
            return None, [], None
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        return body, [], body

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"].rstrip("/")
        method = request.method
        query = dict(request.query)
        body, uploads, summary = await self._read_body(request)

        handled = True
        response: web.StreamResponse | None = self._injected_fault(method, path)
        if response is None:
            response, handled = await self._route(request, method, path, query, body, uploads)
        record = RecordedRequest(method, path, summary, query, response.status)
        self.requests.append(record)
        if response.status == 429:
            self.rate_limits_served.append(record)
        if not handled:
            self.unhandled.append(record)
        self._touch()
        return response

    async def _route(
        self,
        request: web.Request,
        method: str,
        path: str,
        query: dict[str, str],
        body: Any,
        uploads: list[_Upload],
    ) -> tuple[web.StreamResponse, bool]:
        """(response, whether a route handled it)."""
        path_matched = False
        for route_method, pattern, handler, needs_auth in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            path_matched = True
            if route_method != method:
                continue
            if needs_auth and not self._authorized(request):
                return _error(401, "401: Unauthorized"), True
            call = _Call(method, path, match.groupdict(), query, body, uploads)
            return await handler(call), True
        if path_matched:
            return _error(405, "405: Method Not Allowed"), False
        return _error(404, "404: Not Found"), False

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if self.token is None:
            return True
        return header == f"Bot {self.token}"

    def _injected_fault(self, method: str, path: str) -> web.Response | None:
        for fault in self._faults:
            if fault.method not in ("*", method) or fault.pattern.search(path) is None:
                continue
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
            if fault.status != 429:
                return _error(fault.status, f"{fault.status}: injected failure")
            body = {
                "message": "You are being rate limited.",
                "retry_after": fault.retry_after,
                "global": fault.is_global,
            }
            headers = {
                "Retry-After": str(max(1, round(fault.retry_after))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + fault.retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{fault.retry_after:.3f}",
                "X-RateLimit-Bucket": "fake" + secrets.token_hex(8),
                "X-RateLimit-Scope": "global" if fault.is_global else "user",
                # discord.py treats a 429 without `Via` as a Cloudflare ban and gives up.
                "Via": "1.1 google",
            }
            if fault.is_global:
                headers["X-RateLimit-Global"] = "true"
            return _json(body, status=429, headers=headers)
        return None

    async def _handle_unknown(self, request: web.Request) -> web.Response:
        _, _, summary = await self._read_body(request)
        record = RecordedRequest(request.method, request.path, summary, dict(request.query), 404)
        self.requests.append(record)
        self.unhandled.append(record)
        self._touch()
        return _error(404, "404: Not Found")

    async def _handle_attachment(self, request: web.Request) -> web.Response:
        stored = self._attachments.get(request.match_info["attachment_id"])
        if stored is None or stored[0]["filename"] != request.match_info["filename"]:
            return _error(404, "404: Not Found")
        attachment, data = stored
        return web.Response(
            body=data, content_type=attachment.get("content_type") or "application/octet-stream"
        )

    # ----------------------------------------------------------------------------------------
    # REST: users, application, gateway
    # ----------------------------------------------------------------------------------------

    async def _no_content(self, call: _Call) -> web.Response:
        return web.Response(status=204)

    async def _get_gateway(self, call: _Call) -> web.Response:
        return _json({"url": self.gateway_url})

    async def _get_gateway_bot(self, call: _Call) -> web.Response:
        return _json(
            {
                "url": self.gateway_url,
                "shards": self.shard_count,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 1000 - self.identifies,
                    "reset_after": 86_400_000,
                    "max_concurrency": 1,
                },
            }
        )

    async def _get_me(self, call: _Call) -> web.Response:
        return _json(
            {**self.bot.payload(), "verified": True, "mfa_enabled": False, "locale": "en-US"}
        )

    async def _get_user(self, call: _Call) -> web.Response:
        user = self.users.get(call.params["user_id"])
        if user is None:
            return _error(404, "Unknown User", 10013)
        return _json(user.payload())

    async def _create_dm(self, call: _Call) -> web.Response:
        recipient = str((call.json or {}).get("recipient_id"))
        if recipient not in self.users:
            return _form_error("recipient_id", "NUMBER_TYPE_COERCE", "Unknown user")
        return _json(self.dm_channel(recipient).payload(self))

    async def _get_application(self, call: _Call) -> web.Response:
        return _json(
            {
                "id": self.application_id,
                "name": self.bot.username,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "flags": 0,
                "team": None,
                "owner": self.owner.payload(),
                "bot": self.bot.payload(),
                # discord.py warns when this is set: interactions would go to that URL instead.
                "interactions_endpoint_url": None,
                "redirect_uris": [],
                "tags": [],
                "approximate_guild_count": len(self.guilds),
            }
        )

    # ----------------------------------------------------------------------------------------
    # REST: application commands
    # ----------------------------------------------------------------------------------------

    def _scope(self, call: _Call) -> tuple[str | None, web.Response | None]:
        if call.params["app_id"] != self.application_id:
            return None, _error(403, "Missing Access", 50001)
        guild_id = call.params.get("guild_id")
        if guild_id is not None and guild_id not in self.guilds:
            return None, _error(403, "Missing Access", 50001)
        return guild_id, None

    def _validate_command(self, command: Any, path: str = "") -> web.Response | None:
        """A subset of Discord's checks, so a bad definition fails here as it would live."""
        if not isinstance(command, dict):
            return _form_error(path or "_", "DICT_TYPE_CONVERT", "Must be an object.")
        ctype = command.get("type", 1)
        prefix = f"{path}." if path else ""
        if ctype == 1 and (error := self._validate_name(command, prefix)):
            return error
        options = command.get("options") or []
        if len(options) > 25:
            return _form_error(f"{prefix}options", "BASE_TYPE_MAX_LENGTH", "Max 25 options")
        seen_optional = False
        for index, option in enumerate(options):
            if option.get("type") in (OPT_SUB_COMMAND, OPT_SUB_COMMAND_GROUP):
                error = self._validate_command({**option, "type": 1}, f"{prefix}options.{index}")
                if error is not None:
                    return error
                continue
            if (error := self._validate_name(option, f"{prefix}options.{index}.")) is not None:
                return error
            if option.get("required"):
                if seen_optional:
                    return _form_error(
                        f"{prefix}options.{index}.required",
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed before non-required options",
                    )
            else:
                seen_optional = True
            if len(option.get("choices") or []) > 25:
                return _form_error(
                    f"{prefix}options.{index}.choices", "BASE_TYPE_MAX_LENGTH", "Max 25 choices"
                )
        return None

    @staticmethod
    def _validate_name(item: dict[str, Any], prefix: str) -> web.Response | None:
        """Chat-input command and option names: 1-32 lowercase word characters or dashes;
        descriptions: 1-100 characters."""
        name = item.get("name", "")
        if not re.fullmatch(r"[-_\w]{1,32}", name) or name != name.lower():
            return _form_error(f"{prefix}name", "APPLICATION_COMMAND_INVALID_NAME", "Invalid name")
        if not 1 <= len(item.get("description") or "") <= 100:
            return _form_error(f"{prefix}description", "BASE_TYPE_BAD_LENGTH", "1-100 chars")
        return None

    def _store_command(
        self, scope: str | None, payload: dict[str, Any], existing: dict[str, Any] | None
    ) -> dict[str, Any]:
        commands = self._commands.setdefault(scope, {})
        command = {
            "type": 1,
            "description": "",
            "options": [],
            "default_member_permissions": None,
            "dm_permission": True,
            "nsfw": False,
            "name_localizations": None,
            "description_localizations": None,
            "contexts": None,
            "integration_types": [0],
            **payload,
            # Discord keeps a command's id when it is overwritten under the same name/type.
            "id": existing["id"] if existing else self._snowflakes.next(),
            "application_id": self.application_id,
            "version": self._snowflakes.next(),
        }
        self._normalize_command(command)
        if scope is not None:
            command["guild_id"] = scope
            command.pop("dm_permission", None)
        commands[command["id"]] = command
        return command

    @staticmethod
    def _normalize_command(command: dict[str, Any]) -> None:
        if command.get("default_member_permissions") is not None:
            # A permission bitfield: Discord returns it as a string.
            command["default_member_permissions"] = str(int(command["default_member_permissions"]))

    def _same_command(self, scope: str | None, payload: dict[str, Any]) -> dict[str, Any] | None:
        return next(
            (
                c
                for c in self._commands.get(scope, {}).values()
                if c["name"] == payload.get("name") and c["type"] == payload.get("type", 1)
            ),
            None,
        )

    async def _list_commands(self, call: _Call) -> web.Response:
        scope, error = self._scope(call)
        return error or _json(self.commands(scope))

    async def _bulk_overwrite_commands(self, call: _Call) -> web.Response:
        scope, error = self._scope(call)
        if error:
            return error
        if not isinstance(call.json, list):
            return _form_error("_", "LIST_TYPE_CONVERT", "Must be an array.")
        for index, payload in enumerate(call.json):
            if (error := self._validate_command(payload, str(index))) is not None:
                return error
        previous = self._commands.get(scope, {})
        self._commands[scope] = {}
        for payload in call.json:
            existing = next(
                (
                    c
                    for c in previous.values()
                    if c["name"] == payload["name"] and c["type"] == payload.get("type", 1)
                ),
                None,
            )
            self._store_command(scope, payload, existing)
        self.command_writes += 1
        return _json(self.commands(scope))

    async def _upsert_command(self, call: _Call) -> web.Response:
        scope, error = self._scope(call)
        if error or (error := self._validate_command(call.json)):
            return error
        existing = self._same_command(scope, call.json)
        command = self._store_command(scope, call.json, existing)
        self.command_writes += 1
        return _json(command, status=200 if existing else 201)

    async def _get_command(self, call: _Call) -> web.Response:
        scope, error = self._scope(call)
        command = self._commands.get(scope, {}).get(call.params["command_id"])
        if error or command is None:
            return error or _error(404, "Unknown application command", 10063)
        return _json(command)

    async def _edit_command(self, call: _Call) -> web.Response:
        scope, error = self._scope(call)
        command = self._commands.get(scope, {}).get(call.params["command_id"])
        if error or command is None:
            return error or _error(404, "Unknown application command", 10063)
        merged = {**command, **(call.json or {})}
        if (error := self._validate_command(merged)) is not None:
            return error
        command.update(call.json or {})
        self._normalize_command(command)
        command["version"] = self._snowflakes.next()
        self.command_writes += 1
        return _json(command)

    async def _delete_command(self, call: _Call) -> web.Response:
        scope, error = self._scope(call)
        if error:
            return error
        if self._commands.get(scope, {}).pop(call.params["command_id"], None) is None:
            return _error(404, "Unknown application command", 10063)
        return web.Response(status=204)

    # ----------------------------------------------------------------------------------------
    # Messages
    # ----------------------------------------------------------------------------------------

    def _store_attachment(
        self,
        data: bytes,
        filename: str,
        content_type: str | None,
        *,
        description: str | None = None,
        ephemeral: bool = False,
    ) -> dict[str, Any]:
        attachment_id = self._snowflakes.next()
        if content_type in (None, "application/octet-stream"):
            # discord.py uploads every file as application/octet-stream; Discord derives the
            # real type from the file itself.
            content_type = mimetypes.guess_type(filename)[0] or content_type
        url = f"{self.url}/attachments/{attachment_id}/{urllib.parse.quote(filename, safe='')}"
        attachment: dict[str, Any] = {
            "id": attachment_id,
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }
        if description is not None:
            attachment["description"] = description
        if (size := _image_size(data)) is not None:
            attachment["width"], attachment["height"] = size
        if ephemeral:
            attachment["ephemeral"] = True
        self._attachments[attachment_id] = (attachment, data)
        return attachment

    def _message_attachments(
        self,
        payload: dict[str, Any],
        uploads: list[_Upload],
        current: list[dict[str, Any]],
        ephemeral: bool,
        size_limit: int,
    ) -> list[dict[str, Any]] | web.Response:
        """The attachment list after a create/edit.

        `payload["attachments"]` lists what the message keeps: existing attachments by their
        snowflake id, new uploads by the index n of their `files[n]` part (discord.py's
        File.to_dict). Without that key every upload is added and existing ones are kept.
        "The file upload size limit applies to each file in a request" (docs: reference
        "Uploading Files"): one larger than `size_limit` fails the request."""
        for upload in uploads:
            if len(upload.data) > size_limit:
                return _error(413, "Request entity too large", 40005)
        by_index = {u.index: u for u in uploads}
        existing = {a["id"]: a for a in current}
        entries = payload.get("attachments")
        if entries is None:
            entries = [{"id": a["id"]} for a in current] + [
                {"id": u.index, "filename": u.filename} for u in uploads
            ]
        result = []
        for index, entry in enumerate(entries):
            key = entry.get("id")
            if str(key) in existing:
                result.append(existing[str(key)])
                continue
            upload = by_index.get(int(key)) if str(key).isdigit() else None
            if upload is None:
                return _form_error(
                    f"attachments.{index}", "ATTACHMENT_NOT_FOUND", "Unknown attachment"
                )
            stored = self._store_attachment(
                upload.data,
                entry.get("filename") or upload.filename,
                upload.content_type,
                description=entry.get("description"),
                ephemeral=ephemeral,
            )
            result.append({**stored, "data": upload.data})
        return result

    @staticmethod
    def _validate_message(payload: dict[str, Any], has_files: bool) -> web.Response | None:
        content = payload.get("content") or ""
        if len(content) > MAX_CONTENT_LENGTH:
            return _form_error(
                "content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length."
            )
        if len(payload.get("embeds") or []) > 10:
            return _form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        for component in _walk_components(payload.get("components")):
            if len(component.get("custom_id") or "") > 100:
                return _form_error(
                    "components", "BASE_TYPE_MAX_LENGTH", "custom_id must be 100 or fewer"
                )
        allowed = payload.get("allowed_mentions") or {}
        for kind in ("users", "roles"):
            # `parse` is mutually exclusive with the id lists (docs: resources/message
            # "Allowed Mentions Examples").
            if kind in (allowed.get("parse") or []) and allowed.get(kind):
                return _form_error(
                    "allowed_mentions",
                    "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                    f'parse:["{kind}"] and {kind}: [ids] are mutually exclusive.',
                )
        if FakeDiscord._is_empty(payload, has_files):
            return _error(400, "Cannot send an empty message", 50006)
        return None

    @staticmethod
    def _is_empty(payload: dict[str, Any], has_files: bool) -> bool:
        keys = ("content", "embeds", "components", "attachments", "sticker_ids", "poll")
        return not (has_files or any(payload.get(key) for key in keys))

    def _new_message(
        self,
        channel: FakeChannel,
        payload: dict[str, Any],
        uploads: list[_Upload],
        *,
        interaction: Interaction | None = None,
        message_type: int = MESSAGE_DEFAULT,
    ) -> dict[str, Any] | web.Response:
        if (error := self._validate_message(payload, bool(uploads))) is not None:
            return error
        # Only interaction responses and follow-ups can be ephemeral.
        accepted = CREATE_FLAGS if interaction is None else INTERACTION_FLAGS
        flags = int(payload.get("flags") or 0) & accepted
        attachments = self._message_attachments(
            payload, uploads, [], bool(flags & FLAG_EPHEMERAL), self._upload_limit(channel)
        )
        if isinstance(attachments, web.Response):
            return attachments
        return self._insert_message(
            channel,
            content=payload.get("content") or "",
            embeds=payload.get("embeds") or [],
            components=payload.get("components") or [],
            attachments=attachments,
            flags=flags,
            interaction=interaction,
            message_type=message_type,
            extra={k: payload[k] for k in ("tts", "poll", "nonce") if k in payload},
            reference=payload.get("message_reference"),
            allowed_mentions=payload.get("allowed_mentions"),
        )

    def _insert_message(
        self,
        channel: FakeChannel,
        *,
        content: str = "",
        embeds: list[Any] | None = None,
        components: list[Any] | None = None,
        attachments: list[dict[str, Any]] | None = None,
        flags: int = 0,
        interaction: Interaction | None = None,
        message_type: int = MESSAGE_DEFAULT,
        extra: dict[str, Any] | None = None,
        reference: dict[str, Any] | None = None,
        allowed_mentions: dict[str, Any] | None = None,
        author: FakeUser | None = None,
        message_id: str | None = None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": message_id or self._snowflakes.next(),
            "channel_id": channel.id,
            "type": message_type,
            "author": (author or self.bot).payload(),
            "content": content,
            "embeds": embeds or [],
            "components": components or [],
            "attachments": attachments or [],
            "flags": flags,
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "pinned": False,
            **(extra or {}),
        }
        if channel.guild_id is not None:
            message["guild_id"] = channel.guild_id
        if reference and (target := self._messages.get(str(reference.get("message_id")))):
            message["type"] = MESSAGE_REPLY
            message["message_reference"] = {
                "type": 0,
                "message_id": target["id"],
                "channel_id": target["channel_id"],
                **({"guild_id": channel.guild_id} if channel.guild_id else {}),
            }
            message["referenced_message"] = self._wire_message(target)
        if interaction is not None:
            # Interaction messages are sent by the application's webhook.
            message["webhook_id"] = self.application_id
            message["application_id"] = self.application_id
            metadata: dict[str, Any] = {
                "id": interaction.id,
                "type": interaction.type,
                "user": self.users[interaction.user_id].payload(),
                "authorizing_integration_owners": interaction.payload[
                    "authorizing_integration_owners"
                ],
            }
            if interaction.type == INTERACTION_APPLICATION_COMMAND:
                metadata["name"] = interaction.payload["data"]["name"]
                metadata["command_type"] = 1
            if "message" in interaction.payload:
                metadata["interacted_message_id"] = interaction.payload["message"]["id"]
            if interaction.original_id is not None:
                metadata["original_response_message_id"] = interaction.original_id
            message["interaction_metadata"] = metadata
        message["interaction_token"] = interaction.token if interaction else None
        message["allowed_mentions"] = copy.deepcopy(allowed_mentions)
        message["deleted"] = False
        message["history"] = [self._snapshot(message, mentions_parsed=True)]
        self._messages[message["id"]] = message
        self._dispatch_message_event("MESSAGE_CREATE", message)
        return message

    @staticmethod
    def _snapshot(message: dict[str, Any], *, mentions_parsed: bool) -> dict[str, Any]:
        """One version of a message, for `history`; `mentions_parsed` says whether its request
        set the text (on an edit, content or components), so mentions were parsed anew."""
        keys = (
            "content",
            "embeds",
            "components",
            "attachments",
            "flags",
            "edited_timestamp",
            "allowed_mentions",
        )
        snapshot = {key: copy.deepcopy(message[key]) for key in keys}
        snapshot["mentions_parsed"] = mentions_parsed
        return snapshot

    def _edit_message(
        self, message: dict[str, Any], payload: dict[str, Any], uploads: list[_Upload]
    ) -> dict[str, Any] | web.Response:
        merged = {
            "content": payload.get("content", message["content"]),
            "embeds": payload.get("embeds", message["embeds"]),
            "components": payload.get("components", message["components"]),
            "attachments": payload.get("attachments", message["attachments"]),
            "allowed_mentions": payload.get("allowed_mentions"),
        }
        if (error := self._validate_message(merged, bool(uploads))) is not None:
            return error
        attachments = self._message_attachments(
            payload,
            uploads,
            message["attachments"],
            bool(message["flags"] & FLAG_EPHEMERAL),
            self._upload_limit(self.channels[message["channel_id"]]),
        )
        if isinstance(attachments, web.Response):
            return attachments
        for key in ("content", "embeds", "components"):
            if key in payload:
                message[key] = (
                    payload[key] if payload[key] is not None else ("" if key == "content" else [])
                )
        message["attachments"] = attachments
        if payload.get("flags") is not None:
            # An edit toggles SUPPRESS_EMBEDS and can set IS_COMPONENTS_V2; ephemeral and
            # loading are Discord's (docs: resources/message "Edit Message").
            requested = int(payload["flags"]) & (FLAG_SUPPRESS_EMBEDS | FLAG_IS_COMPONENTS_V2)
            message["flags"] = (message["flags"] & ~FLAG_SUPPRESS_EMBEDS) | requested
        message["flags"] &= ~FLAG_LOADING  # any edit resolves a deferred "thinking" message
        message["edited_timestamp"] = _now_iso()
        message["allowed_mentions"] = copy.deepcopy(payload.get("allowed_mentions"))
        parsed = "content" in payload or "components" in payload
        message["history"].append(self._snapshot(message, mentions_parsed=parsed))
        self._dispatch_message_event("MESSAGE_UPDATE", message)
        return message

    def _delete_message(self, message: dict[str, Any]) -> None:
        message["deleted"] = True
        self._dispatch_message_event("MESSAGE_DELETE", message)

    _FAKE_ONLY_KEYS = ("interaction_token", "allowed_mentions", "history", "deleted")

    def _wire_message(self, message: dict[str, Any]) -> dict[str, Any]:
        """The message as Discord's API returns it (fake-only keys and raw bytes removed)."""
        wire = {k: v for k, v in message.items() if k not in self._FAKE_ONLY_KEYS}
        wire["attachments"] = [
            {k: v for k, v in a.items() if k != "data"} for a in message["attachments"]
        ]
        return wire

    def _message_response(self, result: dict[str, Any] | web.Response) -> web.Response:
        if isinstance(result, web.Response):
            return result
        return _json(self._wire_message(result))

    # ----------------------------------------------------------------------------------------
    # REST: channels, guilds
    # ----------------------------------------------------------------------------------------

    def _channel(self, call: _Call, needs: int = 0) -> FakeChannel | web.Response:
        """The call's channel, if the bot may see it and holds `needs` there (guild channels:
        403 / 50001 "Missing Access" without VIEW_CHANNEL, 403 / 50013 "Missing Permissions"
        without the rest)."""
        channel = self.channels.get(call.params["channel_id"])
        if channel is None:
            return _error(404, "Unknown Channel", 10003)
        if channel.guild_id is None:
            return channel
        granted = self.bot_permissions(channel.id)
        if not granted & PERM_VIEW_CHANNEL:
            return _error(403, "Missing Access", 50001)
        if granted & needs != needs:
            return _error(403, "Missing Permissions", 50013)
        return channel

    def _channel_message(self, call: _Call, needs: int = 0) -> dict[str, Any] | web.Response:
        channel = self._channel(call, needs)
        if isinstance(channel, web.Response):
            return channel
        message = self._messages.get(call.params["message_id"])
        if (
            message is None
            or message["deleted"]
            or message["channel_id"] != channel.id
            or message["flags"] & FLAG_EPHEMERAL  # only reachable through the webhook
        ):
            return _error(404, "Unknown Message", 10008)
        return message

    def _permitted_payload(
        self, channel: FakeChannel, payload: dict[str, Any], uploads: list[_Upload], *, edit: bool
    ) -> dict[str, Any] | web.Response:
        """`payload` as the bot's rights in `channel` let it through, or Discord's refusal.

        Only the channel endpoints (bot token) are checked: interaction responses and
        follow-ups go through the interaction's webhook and need no channel permissions."""
        if channel.type == CHANNEL_DM:
            recipient = self.users[channel.recipient_id or ""]
            shares_guild = any(recipient.id in g.members for g in self.guilds.values())
            if not edit and not (recipient.accepts_dms and shares_guild):
                return _error(403, "Cannot send messages to this user", 50007)
            return payload
        if channel.type == CHANNEL_GUILD_FORUM:
            # "Messages cannot be sent directly in forum channels." (docs: topics/threads)
            return _error(400, "Cannot send messages in a non-text channel", 50008)
        granted = self.bot_permissions(channel.id)
        missing = _error(403, "Missing Permissions", 50013)
        # Create Message needs SEND_MESSAGES (docs: resources/message "Create Message"); in a
        # thread SEND_MESSAGES_IN_THREADS instead (docs: topics/threads "Permissions"). An edit
        # does not: "Send Messages permission restricts the ability to send new messages, but
        # does not prevent existing messages from being updated" (discord-api-docs #3096).
        send = PERM_SEND_MESSAGES_IN_THREADS if channel.is_thread else PERM_SEND_MESSAGES
        if not granted & send:
            if not edit:
                return missing
            # "Denying SEND_MESSAGES implicitly denies ... ATTACH_FILES, and EMBED_LINKS"
            # (docs: topics/permissions "Implicit Permissions").
            granted &= ~(PERM_ATTACH_FILES | PERM_EMBED_LINKS)
        if uploads and not granted & PERM_ATTACH_FILES:
            return missing
        if (
            not edit
            and payload.get("message_reference")
            and not granted & PERM_READ_MESSAGE_HISTORY
        ):
            return missing  # a reply needs READ_MESSAGE_HISTORY (docs: "Create Message")
        if payload.get("embeds") and not granted & PERM_EMBED_LINKS:
            # Without EMBED_LINKS embeds are dropped; a new message left with nothing else is
            # refused (discord-api-docs #2601), an edit then is empty (#5648).
            payload = {**payload, "embeds": []}
            if not edit and self._is_empty(payload, bool(uploads)):
                return missing
        return payload

    async def _get_channel(self, call: _Call) -> web.Response:
        channel = self._channel(call)
        return channel if isinstance(channel, web.Response) else _json(channel.payload(self))

    async def _list_messages(self, call: _Call) -> web.Response:
        channel = self._channel(call)
        if isinstance(channel, web.Response):
            return channel
        if channel.guild_id and not self.bot_permissions(channel.id) & PERM_READ_MESSAGE_HISTORY:
            # "If the current user is missing the READ_MESSAGE_HISTORY permission in the
            # channel, then no messages will be returned." (docs: "Get Channel Messages")
            return _json([])
        limit = min(max(int(call.query.get("limit", 50)), 1), 100)
        before, after = call.query.get("before"), call.query.get("after")
        found = [
            m
            for m in self.messages(channel.id)
            if not m["flags"] & FLAG_EPHEMERAL
            and (before is None or int(m["id"]) < int(before))
            and (after is None or int(m["id"]) > int(after))
        ]
        found = found[:limit] if after is not None else found[-limit:]
        # Discord returns newest first, whichever way one pages.
        return _json([self._wire_message(m) for m in reversed(found)])

    async def _create_message(self, call: _Call) -> web.Response:
        channel = self._channel(call)
        if isinstance(channel, web.Response):
            return channel
        payload = self._permitted_payload(channel, call.json or {}, call.uploads, edit=False)
        if isinstance(payload, web.Response):
            return payload
        return self._message_response(self._new_message(channel, payload, call.uploads))

    async def _get_channel_message(self, call: _Call) -> web.Response:
        # "requires the VIEW_CHANNEL and READ_MESSAGE_HISTORY permissions" (docs: resources/
        # message "Get Channel Message").
        result = self._channel_message(call, PERM_READ_MESSAGE_HISTORY)
        return result if isinstance(result, web.Response) else self._message_response(result)

    async def _edit_channel_message(self, call: _Call) -> web.Response:
        result = self._channel_message(call)
        if isinstance(result, web.Response):
            return result
        channel = self.channels[result["channel_id"]]
        payload = self._permitted_payload(channel, call.json or {}, call.uploads, edit=True)
        if isinstance(payload, web.Response):
            return payload
        return self._message_response(self._edit_message(result, payload, call.uploads))

    async def _delete_channel_message(self, call: _Call) -> web.Response:
        result = self._channel_message(call)
        if isinstance(result, web.Response):
            return result
        self._delete_message(result)
        return web.Response(status=204)

    def _guild(self, call: _Call) -> FakeGuild | web.Response:
        guild = self.guilds.get(call.params["guild_id"])
        return guild if guild is not None else _error(404, "Unknown Guild", 10004)

    async def _get_guild(self, call: _Call) -> web.Response:
        guild = self._guild(call)
        if isinstance(guild, web.Response):
            return guild
        payload = self._guild_payload(guild)
        if _truthy(call.query.get("with_counts")):
            payload["approximate_member_count"] = len(guild.members)
            payload["approximate_presence_count"] = 0
        return _json(payload)

    async def _get_guild_channels(self, call: _Call) -> web.Response:
        guild = self._guild(call)
        if isinstance(guild, web.Response):
            return guild
        # "Does not include threads" (docs: resources/guild "Get Guild Channels").
        return _json(self._guild_channels(guild, threads=False))

    async def _get_guild_roles(self, call: _Call) -> web.Response:
        guild = self._guild(call)
        if isinstance(guild, web.Response):
            return guild
        return _json([r.payload() for r in guild.roles.values()])

    async def _list_members(self, call: _Call) -> web.Response:
        guild = self._guild(call)
        if isinstance(guild, web.Response):
            return guild
        limit = int(call.query.get("limit", 1))
        members = [self._member_payload(guild, uid) for uid in guild.members][:limit]
        return _json(members)

    async def _get_member(self, call: _Call) -> web.Response:
        guild = self._guild(call)
        if isinstance(guild, web.Response):
            return guild
        if call.params["user_id"] not in guild.members:
            return _error(404, "Unknown Member", 10007)
        return _json(self._member_payload(guild, call.params["user_id"]))

    # ----------------------------------------------------------------------------------------
    # REST: interaction callback and webhooks
    # ----------------------------------------------------------------------------------------

    async def _interaction_callback(self, call: _Call) -> web.Response:
        interaction = self._interactions.get(call.params["interaction_id"])
        if (
            interaction is None
            or interaction.token != call.params["token"]
            or interaction.token in self._expired_tokens
        ):
            return _error(404, "Unknown interaction", 10062)
        if interaction.responded:
            return _error(400, "Interaction has already been acknowledged.", 40060)
        delay = time.monotonic() - interaction.dispatched_at
        if interaction.response_delay is None:
            interaction.response_delay = delay
        if delay > self.response_deadline:
            # Past the first-response deadline the token is invalidated (RESPONSE_DEADLINE).
            if not interaction.late:
                interaction.late = True
                self.late_responses.append(interaction)
            return _error(404, "Unknown interaction", 10062)
        body = call.json if isinstance(call.json, dict) else {}
        rtype, data = body.get("type"), body.get("data") or {}
        allowed = {
            INTERACTION_APPLICATION_COMMAND: {4, 5, 9},
            INTERACTION_MESSAGE_COMPONENT: {4, 5, 6, 7, 9},
            INTERACTION_AUTOCOMPLETE: {8},
            INTERACTION_MODAL_SUBMIT: {4, 5, 6, 7},
        }[interaction.type]
        if rtype not in allowed:
            return _form_error("type", "INTERACTION_RESPONSE_TYPE_INVALID", "Invalid type")
        channel = self.channels[interaction.channel_id]
        source = interaction.payload.get("message")
        message: dict[str, Any] | None = None

        if rtype in (CALLBACK_CHANNEL_MESSAGE, CALLBACK_DEFERRED_CHANNEL_MESSAGE):
            ephemeral = int(data.get("flags") or 0) & FLAG_EPHEMERAL
            if rtype == CALLBACK_DEFERRED_CHANNEL_MESSAGE:
                # The "<bot> is thinking..." placeholder; only ephemerality is decided now.
                result = self._insert_message(
                    channel,
                    flags=ephemeral | FLAG_LOADING,
                    interaction=interaction,
                    message_type=self._response_message_type(interaction),
                )
            else:
                result = self._new_message(
                    channel,
                    data,
                    call.uploads,
                    interaction=interaction,
                    message_type=self._response_message_type(interaction),
                )
            if isinstance(result, web.Response):
                return result
            message = result
        elif rtype in (CALLBACK_DEFERRED_UPDATE_MESSAGE, CALLBACK_UPDATE_MESSAGE):
            if source is None:
                return _form_error("type", "INTERACTION_RESPONSE_TYPE_INVALID", "No message")
            message = self._messages.get(source["id"])
            if message is None or message["deleted"]:
                return _error(404, "Unknown Message", 10008)
            if rtype == CALLBACK_UPDATE_MESSAGE:
                result = self._edit_message(message, data, call.uploads)
                if isinstance(result, web.Response):
                    return result
        elif rtype == CALLBACK_MODAL:
            self._open_modals[data.get("custom_id", "")] = (interaction, data)

        interaction.response_type, interaction.response_data = rtype, data
        if message is not None:
            interaction.original_id = message["id"]
        if not _truthy(call.query.get("with_response")):
            return web.Response(status=204)
        return _json(self._callback_object(interaction, rtype, message))

    def _response_message_type(self, interaction: Interaction) -> int:
        if interaction.type == INTERACTION_APPLICATION_COMMAND:
            return MESSAGE_CHAT_INPUT_COMMAND
        return MESSAGE_DEFAULT

    def _callback_object(
        self, interaction: Interaction, rtype: int, message: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The InteractionCallbackResponse returned for `?with_response=true`."""
        info: dict[str, Any] = {"id": interaction.id, "type": interaction.type}
        resource: dict[str, Any] = {"type": rtype}
        if message is not None and rtype != CALLBACK_DEFERRED_UPDATE_MESSAGE:
            info["response_message_id"] = message["id"]
            info["response_message_loading"] = bool(message["flags"] & FLAG_LOADING)
            info["response_message_ephemeral"] = bool(message["flags"] & FLAG_EPHEMERAL)
            resource["message"] = self._wire_message(message)
        result: dict[str, Any] = {"interaction": info}
        if rtype != CALLBACK_MODAL:
            result["resource"] = resource
        return result

    def _webhook_interaction(self, call: _Call) -> Interaction | web.Response:
        token = call.params["token"]
        interaction = next((i for i in self._interactions.values() if i.token == token), None)
        if call.params["app_id"] != self.application_id or interaction is None:
            return _error(404, "Unknown Webhook", 10015)
        if token in self._expired_tokens:
            return _error(401, "Invalid Webhook Token", 50027)
        return interaction

    def _webhook_message(self, call: _Call) -> tuple[Interaction, dict[str, Any]] | web.Response:
        interaction = self._webhook_interaction(call)
        if isinstance(interaction, web.Response):
            return interaction
        message_id = call.params["message_id"]
        if message_id == "@original":
            message_id = interaction.original_id or ""
        message = self._messages.get(message_id)
        if (
            message is None
            or message["deleted"]
            or message_id not in {interaction.original_id, *interaction.followup_ids}
        ):
            return _error(404, "Unknown Message", 10008)
        return interaction, message

    async def _execute_webhook(self, call: _Call) -> web.Response:
        interaction = self._webhook_interaction(call)
        if isinstance(interaction, web.Response):
            return interaction
        if not interaction.responded:
            return _error(404, "Unknown Webhook", 10015)
        payload = call.json or {}
        original = self._messages.get(interaction.original_id or "")
        if (
            interaction.response_type == CALLBACK_DEFERRED_CHANNEL_MESSAGE
            and original is not None
            and original["flags"] & FLAG_LOADING
        ):
            if original["deleted"]:
                # A "thinking" message deleted before it was resolved takes the follow-up down
                # with it (discord-api-docs #3087).
                return _error(404, "Unknown Message", 10008)
            # The first follow-up after a defer edits the loading message: "The ephemeral flag
            # will be ignored, and the value you provided in the initial defer response will be
            # preserved" (docs: interactions/receiving-and-responding "Create Followup Message").
            result = self._edit_message(original, payload, call.uploads)
        else:
            result = self._new_message(
                self.channels[interaction.channel_id],
                payload,
                call.uploads,
                interaction=interaction,
            )
        if isinstance(result, web.Response):
            return result
        interaction.followup_ids.append(result["id"])
        if not _truthy(call.query.get("wait")):
            return web.Response(status=204)
        return _json(self._wire_message(result))

    async def _get_webhook_message(self, call: _Call) -> web.Response:
        found = self._webhook_message(call)
        if isinstance(found, web.Response):
            return found
        return self._message_response(found[1])

    async def _edit_webhook_message(self, call: _Call) -> web.Response:
        found = self._webhook_message(call)
        if isinstance(found, web.Response):
            return found
        return self._message_response(self._edit_message(found[1], call.json or {}, call.uploads))

    async def _delete_webhook_message(self, call: _Call) -> web.Response:
        found = self._webhook_message(call)
        if isinstance(found, web.Response):
            return found
        self._delete_message(found[1])
        return web.Response(status=204)
