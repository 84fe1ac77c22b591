"""The engine's operations beyond plain text-to-image and image-to-image (engine.pipelines):

- :mod:`engine.ops.masks` and :mod:`engine.ops.outpaint`: masks and canvases for the edits
  (Vary Region, Zoom Out, Pan, Make Square). Pillow and NumPy only: the bot builds them.
- :mod:`engine.ops.inpaint`: the inpainting pipeline (``from_pipe`` or a dedicated checkpoint)
  and the paste-back that keeps every pixel outside the mask.
- :mod:`engine.ops.control`: ControlNets by kind, loaded on first use beside the model.
- :mod:`engine.ops.ip_adapter`: image prompts (IP-Adapter), switched onto the U-Net per batch.
- :mod:`engine.ops.upscale`: Upscale (Subtle), a super-resolution model on the engine thread.
- :mod:`engine.ops.helpers`: the models that look at pictures (captions, segmentation, depth),
  on a thread of their own.
- :mod:`engine.ops.companions`: one loaded model's inpainting, ControlNets and IP-Adapter;
  :mod:`engine.ops.base`: what every runner returns; :mod:`engine.ops.hub`: Hub files.

This package's ``__init__`` imports nothing, so the torch-free modules stay torch-free.
"""
