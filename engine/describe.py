"""/describe: an image in, candidate prompts out, from a BLIP captioning model.

Candidates come from several decodings of the same caption model, deterministically:

1. beam search returning several sequences (the model's most likely captions, best first);
2. if those give fewer distinct captions than asked for, nucleus sampling with fixed seeds
   (``seed``, ``seed + 1`` ...), under a private random state so nothing else's randomness is
   touched.

Captions are cleaned (whitespace, BLIP-large's stray "arafed" token) and de-duplicated ignoring
case and punctuation. If even then fewer distinct captions come out than asked for, fewer are
returned: the caller shows what there is rather than padding with repeats.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from PIL import Image

from engine.control_maps import load_pretrained
from engine.requests import GenerationError, first_line

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 30  # BLIP's captions are one sentence; COCO captions average about 10 words
SAMPLING_TRIES = 8  # sampled captions tried after beam search before settling for fewer
TOP_P = 0.9
# BLIP-large often starts captions with made-up words such as "arafed" or "araffe" (a known
# quirk of Salesforce/blip-image-captioning-large); they mean nothing, so they are dropped.
_NONSENSE = re.compile(r"\b(?:arafed|araffe|araffed|arafe)\b\s*", re.IGNORECASE)


class Captioner:
    """A BLIP captioning model and its processor. Not thread-safe."""

    def __init__(self, model: Any, processor: Any, *, source: str) -> None:
        self.model = model
        self.processor = processor
        self.source = source

    def describe(self, image: Image.Image, n: int = 4, *, seed: int = 0) -> list[str]:
        """Up to ``n`` distinct candidate prompts for ``image``, most likely first; the same
        image, ``n`` and ``seed`` give the same list."""
        import torch

        if n < 1:
            raise GenerationError("Ask for at least one description.")
        try:
            with torch.inference_mode():
                inputs = self.processor(images=image.convert("RGB"), return_tensors="pt")
                pixels = inputs["pixel_values"].to(self.model.device, self.model.dtype)
                found: dict[str, str] = {}
                beams = max(n, 4)
                self._add(
                    found,
                    self.model.generate(
                        pixel_values=pixels,
                        num_beams=beams,
                        num_return_sequences=beams,
                        max_new_tokens=MAX_NEW_TOKENS,
                        do_sample=False,
                    ),
                    n,
                )
                for i in range(SAMPLING_TRIES):
                    if len(found) >= n:
                        break
                    with torch.random.fork_rng(devices=self._cuda_devices()):
                        torch.manual_seed(seed + i)
                        ids = self.model.generate(
                            pixel_values=pixels,
                            do_sample=True,
                            top_p=TOP_P,
                            num_return_sequences=n - len(found),
                            max_new_tokens=MAX_NEW_TOKENS,
                        )
                    self._add(found, ids, n)
        except torch.OutOfMemoryError as exc:
            raise GenerationError(
                "Out of memory describing the image.", out_of_memory=True
            ) from exc
        except Exception as exc:
            raise GenerationError(f"Describing the image failed: {first_line(exc)}") from exc
        if len(found) < n:
            log.info("Only %d distinct captions of %d asked for.", len(found), n)
        return list(found.values())

    def _add(self, found: dict[str, str], ids: Any, n: int) -> None:
        for text in self.processor.batch_decode(ids, skip_special_tokens=True):
            caption = clean_caption(text)
            key = re.sub(r"[^\w]+", " ", caption.lower()).strip()
            if key and key not in found and len(found) < n:
                found[key] = caption

    def _cuda_devices(self) -> list[int]:
        device = self.model.device
        return [device.index or 0] if device.type == "cuda" else []


def clean_caption(text: str) -> str:
    """A caption as a prompt: BLIP's nonsense tokens gone, spaces tidied, no final full stop."""
    text = _NONSENSE.sub("", text)
    text = re.sub(r"\s+", " ", text).strip().rstrip(".").strip()
    # The tokenizer decodes "it's" as "it ' s"; join such pieces back.
    return re.sub(r"\s*'\s*(s|t|re|ve|ll|d|m)\b", r"'\1", text)


def load_captioner(source: str | Path, *, device: Any = "cpu") -> Captioner:
    """Load a BLIP captioning model (``BlipForConditionalGeneration`` + ``BlipProcessor``) from a
    local folder or a Hub id (downloaded once), e.g. ``Salesforce/blip-image-captioning-base``.

    Raises :class:`engine.loading.ModelLoadError` naming the source and the problem.
    """
    from transformers import BlipForConditionalGeneration, BlipProcessor

    model, processor = load_pretrained(
        "Caption model",
        "a BLIP captioning model",
        source,
        BlipForConditionalGeneration,
        BlipProcessor,
        device=device,
    )
    return Captioner(model, processor, source=str(source))
