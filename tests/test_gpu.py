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


def test_the_compiled_fast_path_compiles_at_load_not_in_a_users_job(model_dir):
    """EASEL_COMPILE on a GPU: channels-last weights in half precision, cuDNN autotuning, the
    compiled kernels cached beside the models, and every compilation done by the warm-up at
    load, so users' jobs of the warmed shapes compile nothing (and repeat themselves)."""
    import os

    from torch._dynamo.utils import counters

    from engine.loading import load_model
    from engine.pool import ModelPool
    from engine.worker import DeviceExecutor, Engine

    model = load_model("tiny", data_dir=model_dir, device="cuda", compile_unet=True)
    unet = model.txt2img.unet
    assert unet.dtype == torch.float16
    conv = next(m for m in unet.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.backends.cudnn.benchmark
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"].startswith(str(model_dir))
    pool = ModelPool.of(model)
    device = DeviceExecutor(pool, warm_up=8)
    engine = Engine(pool, executors=[device], preview_interval=1.0)
    engine.start()
    try:
        for future in engine.preload():
            future.result(600)
        compiled = counters["stats"]["unique_graphs"]
        req = GenerationRequest(
            Operation.TXT2IMG, "a fox", "", 64, 64, 4, 7.0, "euler_a", (1, 2, 3, 4)
        )
        previews: list = []
        a = engine.submit(req, on_progress=lambda p: previews.append(p.preview)).result(120)
        b = engine.submit(req).result(120)
        assert counters["stats"]["unique_graphs"] == compiled
        assert [i.tobytes() for i in a.images] == [i.tobytes() for i in b.images]
        assert previews[1] is not None  # after the first step
    finally:
        engine.stop()
