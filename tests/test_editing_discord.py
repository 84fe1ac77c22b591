"""Editing one image from Discord, end to end: the real bot against the fake Discord server,
the real service and engine (tiny model). The edit buttons on a single image, a press that
makes a 2×2 grid of edits, the Vary (Region) and Custom Zoom modals, and privacy."""

from __future__ import annotations

import numpy as np

from bot.core.models import JobKind
from engine.ops.masks import cells_mask
from tests.harness import WAIT, custom_ids, image_of, job_id_of
from tests.test_editing import png

EDIT_IDS = [
    "easel:e:rg:{j}:0",
    "easel:e:z2:{j}:0",
    "easel:e:z15:{j}:0",
    "easel:e:zc:{j}:0",
    "easel:e:pl:{j}:0",
    "easel:e:pr:{j}:0",
    "easel:e:pu:{j}:0",
    "easel:e:pd:{j}:0",
]


def fields(modal: dict) -> dict[int, dict]:
    """The modal's inputs by component type (4 text, 3 select, 19 file upload), each in a
    label (type 18) as discord.py 2.7 lays them out."""
    found: dict[int, list[dict]] = {}
    for top in modal["components"]:
        assert top["type"] == 18  # a label wrapping one input
        found.setdefault(top["component"]["type"], []).append(top["component"])
    return found


async def single_of(h, prompt: str) -> tuple[int, dict]:
    """/imagine, then U1: the job and the single image's message."""
    _, grid = await h.imagine(prompt)
    job = job_id_of(grid)
    return job, await h.done(await h.fake.click(grid, f"easel:u:{job}:0"))


async def modal_of(h, message: dict, custom_id: str) -> dict:
    """Press a button that opens a modal: the modal."""
    opened = await h.fake.click(message, custom_id)
    await opened.wait_for_response(WAIT)
    assert opened.response_type == 9  # a modal
    return opened.response_data


async def result_of(h, interaction) -> dict:
    return await h.fake.wait_for_message(
        lambda m: m["id"] == interaction.original_id and m["components"], timeout=WAIT
    )


async def test_edit_buttons_make_grids_of_edits(h):
    async with h.bot():
        job, single = await single_of(h, "a castle --seed 3")
        ids = custom_ids(single)
        assert [i for i in ids if i.startswith("easel:e:")] == [i.format(j=job) for i in EDIT_IDS]
        assert len(single["components"]) <= 5  # Discord's rows
        zoomed = await result_of(h, await h.fake.click(single, f"easel:e:z2:{job}:0"))
        zoom = await h.store.get_job(job_id_of(zoomed))
        # A second press within the double-click window joins the first press's job.
        again = await result_of(h, await h.fake.click(single, f"easel:e:z2:{job}:0"))
        assert job_id_of(again) == zoom.id
        assert zoom.kind is JobKind.ZOOM and zoom.params["factor"] == 2.0
        assert (zoom.parent_job_id, zoom.parent_index) == (job, 0)
        assert f"easel:u:{zoom.id}:0" in custom_ids(zoomed)  # a grid with its buttons
        assert "easel zoom" in zoomed["content"]  # the remake line
        grid = np.asarray(image_of(zoomed).convert("RGB"))
        assert grid.shape[:2] == (zoom.spec.height * 2, zoom.spec.width * 2)

        # Make Square shows on an image that is not square, and makes square ones.
        wide, wide_single = await single_of(h, "a castle --ar 3:2 --seed 3")
        assert f"easel:e:sq:{wide}:0" in custom_ids(wide_single)
        squared = await result_of(h, await h.fake.click(wide_single, f"easel:e:sq:{wide}:0"))
        square = await h.store.get_job(job_id_of(squared))
        assert square.kind is JobKind.SQUARE and square.spec.width == square.spec.height


async def test_vary_region_through_the_modal(h):
    async with h.bot():
        job, single = await single_of(h, "a castle --seed 3")
        modal = await modal_of(h, single, f"easel:e:rg:{job}:0")
        inputs = fields(modal)
        (area, prompt), (cells,), (mask,) = inputs[4], inputs[3], inputs[19]
        assert prompt["value"] == "a castle"  # the prompt, ready to edit
        assert len(cells["options"]) == 9 and cells["min_values"] == 0
        assert mask["max_values"] == 1 and not mask.get("required", True)
        # Two ways at once: which one was meant is unclear, so nothing is made.
        both = await h.fake.submit_modal(
            modal["custom_id"],
            {area["custom_id"]: "the sky", cells["custom_id"]: ["1"], prompt["custom_id"]: "x"},
        )
        assert "exactly one way" in await h.refused(both)

        modal = await modal_of(h, single, f"easel:e:rg:{job}:0")
        inputs = fields(modal)
        submitted = await h.fake.submit_modal(
            modal["custom_id"],
            {inputs[3][0]["custom_id"]: ["1", "5"], inputs[4][1]["custom_id"]: "a red kite"},
        )
        edited = await result_of(h, submitted)
        region = await h.store.get_job(job_id_of(edited))
        assert region.kind is JobKind.REGION and region.params["cells"] == [1, 5]
        assert region.spec.prompt == "a red kite" and f"easel:v:{region.id}:3" in custom_ids(edited)

        # The mask way: a file uploaded in the modal.
        modal = await modal_of(h, single, f"easel:e:rg:{job}:0")
        inputs = fields(modal)
        upload = (png(cells_mask(64, 64, [9])), "mask.png", "image/png")
        submitted = await h.fake.submit_modal(
            modal["custom_id"],
            {inputs[19][0]["custom_id"]: [upload], inputs[4][1]["custom_id"]: "a red kite"},
        )
        masked = await h.store.get_job(job_id_of(await result_of(h, submitted)))
        assert masked.kind is JobKind.REGION and masked.params["mask"].startswith("masks/")


async def test_custom_zoom_through_the_modal(h):
    async with h.bot():
        job, single = await single_of(h, "a castle --seed 3")
        modal = await modal_of(h, single, f"easel:e:zc:{job}:0")
        factor, prompt = fields(modal)[4]
        wrong = await h.fake.submit_modal(modal["custom_id"], {factor["custom_id"]: "3"})
        assert "from 1.1 to 2.0, not 3" in await h.refused(wrong)
        modal = await modal_of(h, single, f"easel:e:zc:{job}:0")
        factor, prompt = fields(modal)[4]
        wrong = await h.fake.submit_modal(modal["custom_id"], {factor["custom_id"]: "twice"})
        assert "a number such as 1.5, not 'twice'" in await h.refused(wrong)
        modal = await modal_of(h, single, f"easel:e:zc:{job}:0")
        factor, prompt = fields(modal)[4]
        submitted = await h.fake.submit_modal(
            modal["custom_id"], {factor["custom_id"]: "1.25", prompt["custom_id"]: "a harbour"}
        )
        zoom = await h.store.get_job(job_id_of(await result_of(h, submitted)))
    assert zoom.kind is JobKind.ZOOM and zoom.params["factor"] == 1.25
    assert zoom.spec.prompt == "a harbour"


async def test_an_edit_of_a_private_result_stays_private(h):
    async with h.bot():
        settings = await h.fake.slash("settings set", {"private": True})
        await settings.wait_for_followup(timeout=WAIT)
        job, single = await single_of(h, "a secret castle --seed 4")
        assert single["flags"] & 64  # ephemeral
        panned = await result_of(h, await h.fake.click(single, f"easel:e:pl:{job}:0"))
        assert panned["flags"] & 64
        pan = await h.store.get_job(job_id_of(panned))
    assert pan.kind is JobKind.PAN and pan.private and pan.params["direction"] == "left"


async def test_edit_buttons_work_after_a_restart_and_on_show(h):
    async with h.bot():
        job, single = await single_of(h, "a castle --seed 3")
        upscaled = await h.done(await h.fake.click(single, f"easel:up:{job}:0"))
        upscale = job_id_of(upscaled)
    async with h.bot(h.service()):  # a new process: new client, engine and service
        panned = await result_of(h, await h.fake.click(single, f"easel:e:pd:{job}:0"))
        assert (await h.store.get_job(job_id_of(panned))).params["direction"] == "down"
        shown = await h.done(await h.fake.slash("show", {"job": upscale}))  # one image
        assert f"easel:e:z15:{upscale}:0" in custom_ids(shown)
        zoomed = await result_of(h, await h.fake.click(shown, f"easel:e:z15:{upscale}:0"))
    zoom = await h.store.get_job(job_id_of(zoomed))
    assert zoom.kind is JobKind.ZOOM and zoom.parent_job_id == upscale
    assert zoom.spec.width * zoom.spec.height <= 64 * 64 * 1.1  # near the native size
