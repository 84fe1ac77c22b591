"""Editing one image as a feature: Vary (Region), Zoom Out, Pan and Make Square.

- ``buttons.py``: the :class:`~bot.cogs.edit.buttons.EditAction` enum, the persistent buttons
  the single-image view gains (``add_edit_rows``) and the Vary (Region) and Custom Zoom modals;
- ``cog.py``: what each button and modal does, through the imagine cog's delivery.

Nothing is imported here, so the imagine cog's buttons can add these rows without a cycle.
"""
