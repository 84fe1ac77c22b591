"""/imagine as one feature: the command, the buttons on its results, and their delivery.

- ``buttons.py``: the :class:`~bot.cogs.imagine.buttons.Action` enum, the persistent buttons
  (their ``custom_id`` carries the action, the job and the image) and the Remix modal;
- ``cog.py``: /imagine, /show and what each button does (a dispatch table on Action);
- ``delivery.py``: the message that shows a job, from "queued" through previews to the result.
"""

from bot.cogs.imagine.buttons import JobButton
from bot.cogs.imagine.cog import ImagineCog

__all__ = ["ImagineCog", "JobButton"]
