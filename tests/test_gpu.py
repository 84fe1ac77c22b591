"""Checks that need a CUDA GPU (skipped elsewhere): determinism in half precision."""

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
