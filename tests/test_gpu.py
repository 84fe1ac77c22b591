"""Checks that need a CUDA GPU (skipped elsewhere): determinism in half precision, for every
family (FLUX in bfloat16, as EASEL_DTYPE=auto picks for it)."""

from __future__ import annotations

import pytest
import torch

from engine.requests import GenerationRequest, Operation

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_same_request_same_pixels_on_the_gpu(model_dir):
    from engine.loading import load_model
    from engine.worker import Engine

    model = load_model("tiny", data_dir=model_dir, device="cuda", dtype="float16")
    engine = Engine(model, preview_interval=0)
    engine.start()
    try:
        req = GenerationRequest(
            Operation.TXT2IMG, "a fox", "", 64, 64, 4, 7.0, "euler_a", (1, 2, 3, 4)
        )
        a = engine.submit(req).result(120).images
        b = engine.submit(req).result(120).images
        assert [i.tobytes() for i in a] == [i.tobytes() for i in b]
    finally:
        engine.stop()


@pytest.mark.parametrize(
    ("name", "dtype"),
    [("tiny-sdxl", "float16"), ("tiny-sd3", "float16"), ("tiny-flux", "bfloat16")],
)
def test_every_family_runs_and_repeats_itself_on_the_gpu(model_dir, name, dtype):
    from engine.catalogue import load_catalogue
    from engine.pool import ModelPool
    from engine.worker import Engine

    pool = ModelPool(load_catalogue(None, name), data_dir=model_dir, device="cuda")
    engine = Engine(pool, preview_interval=1e-9)
    engine.start()
    try:
        req = GenerationRequest(
            Operation.TXT2IMG, "a fox", "", 64, 64, 4, 3.0, "euler", (1, 2), model=name
        )
        previews: list = []
        a = engine.submit(req, on_progress=lambda p: previews.append(p.preview)).result(120)
        b = engine.submit(req).result(120)
        assert a.repro["dtype"] == dtype and a.repro["device"].startswith("cuda")
        assert [i.tobytes() for i in a.images] == [i.tobytes() for i in b.images]
        assert any(p is not None for p in previews)
        # Half-precision noise is no black square: the VAE decoded real numbers.
        assert max(a.images[0].getextrema(), key=lambda e: e[1])[1] > 0
    finally:
        engine.stop()
