"""Prompt → text-encoder embeddings, per family. Engine thread only.

SD 1.x, 2.x and XL (CLIP text encoders only) go through compel: A1111 emphasis weights
(:mod:`engine.prompt_text`), and prompts longer than CLIP's 77 tokens split into 77-token
chunks (at a comma where one is near) whose embeddings are concatenated, so nothing is cut.
SDXL's pooled embedding reads the first chunk, as in diffusers.

SD3 and FLUX take their pipeline's own ``encode_prompt`` (their T5 encoder reads 256 or 512
tokens); emphasis is read as plain words there, with a note. Midjourney's ``a::2 b`` works for
every family: the parts are encoded alone and blended by weight (compel's ``.blend()``).

A prompt's embedding depends on that prompt alone, never on its batch neighbours: batching
groups requests whose embeddings have the same length instead of padding them to each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from compel import Compel, ReturnedEmbeddingsType, SplitLongTextMode

from engine.adapters import TextualInversionTokens
from engine.families import FAMILIES
from engine.loading import LoadedModel
from engine.prompt_text import Fragment, has_emphasis, parse_emphasis, split_multi_prompt

CLIP_TOKENS = 77  # CLIP's context: 75 prompt tokens between its start and end markers


@dataclass(frozen=True)
class Encoded:
    """One request's text conditioning, as pipeline keyword arguments (batch dimension 1)."""

    tensors: dict[str, torch.Tensor]
    dropped_tokens: int = 0
    dropped_text: str = ""
    notes: tuple[str, ...] = ()

    def shape_key(self) -> tuple[Any, ...]:
        return tuple(sorted((k, tuple(v.shape)) for k, v in self.tensors.items()))


def _blend(parts: list[tuple[float, list[torch.Tensor]]]) -> list[torch.Tensor]:
    """Weighted average of each tensor over the parts (compel's normalised ``.blend()``)."""
    total = sum(w for w, _ in parts)
    return [
        sum(((w / total) * tensors[i] for w, tensors in parts), torch.zeros_like(parts[0][1][i]))
        for i in range(len(parts[0][1]))
    ]


class CompelEncoder:
    """SD 1.x / 2.x (one CLIP encoder) and SDXL (two, side by side, plus a pooled one)."""

    def __init__(self, model: LoadedModel) -> None:
        pipe = model.txt2img
        self.pipe = pipe
        self.xl = model.family == "sdxl"
        # SDXL conditions on the penultimate layer of both encoders (diffusers' pipeline).
        kind = (
            ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
            if self.xl
            else ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED
        )
        pairs = [(pipe.tokenizer, pipe.text_encoder)]
        if self.xl:
            pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
        self.compels = [
            Compel(
                tokenizer=tokenizer,
                text_encoder=encoder,
                textual_inversion_manager=TextualInversionTokens(pipe, tokenizer),
                truncate_long_prompts=False,
                returned_embeddings_type=kind,
                split_long_text_mode=SplitLongTextMode.PHRASES,
                requires_pooled=self.xl and i == 1,
            )
            for i, (tokenizer, encoder) in enumerate(pairs)
        ]
        self._empty: torch.Tensor | None = None

    def _providers(self) -> list[Any]:
        return [c.conditioning_provider for c in self.compels]

    def _part(self, fragments: list[Fragment]) -> list[torch.Tensor]:
        texts = [f.text for f in fragments]
        weights = [f.weight for f in fragments]
        hidden = [
            p.get_embeddings_for_weighted_prompt_fragments(
                text_batch=[texts], fragment_weights_batch=[weights], device=p.device
            )
            for p in self._providers()
        ]
        length = max(h.shape[1] for h in hidden)
        hidden = [
            self._pad(h, length, p.empty_z) for h, p in zip(hidden, self._providers(), strict=True)
        ]
        out = [torch.cat(hidden, dim=-1)]
        if self.xl:
            plain = "".join(texts)
            out.append(self._providers()[1].get_pooled_embeddings([plain], device=self.pipe.device))
        return out

    @staticmethod
    def _pad(embeds: torch.Tensor, length: int, empty: torch.Tensor) -> torch.Tensor:
        # Longer prompts have more 77-token chunks; the shorter one gets empty-prompt chunks,
        # as compel's pad_conditioning_tensors_to_same_length does.
        while embeds.shape[1] < length:
            embeds = torch.cat([embeds, empty.to(embeds.device, embeds.dtype)], dim=1)
        return embeds

    def _empty_chunk(self) -> torch.Tensor:
        if self._empty is None:
            self._empty = torch.cat([p.empty_z for p in self._providers()], dim=-1)
        return self._empty

    def _embed(self, text: str) -> list[torch.Tensor]:
        parts = split_multi_prompt(text)
        embedded = [(p.weight, self._part(parse_emphasis(p.text))) for p in parts]
        if len(embedded) == 1:
            return embedded[0][1]
        length = max(e[0].shape[1] for _, e in embedded)
        padded = [(w, [self._pad(e[0], length, self._empty_chunk()), *e[1:]]) for w, e in embedded]
        return _blend(padded)

    def encode(self, prompt: str, negative: str, cfg: bool) -> Encoded:
        positive = self._embed(prompt)
        tensors = {"prompt_embeds": positive[0]}
        if self.xl:
            tensors["pooled_prompt_embeds"] = positive[1]
        if cfg:
            if self.xl and not negative and self.pipe.config.force_zeros_for_empty_prompt:
                # SDXL was trained with zeros for an empty negative prompt (diffusers' default).
                negative_tensors = [torch.zeros_like(t) for t in positive]
            else:
                negative_tensors = self._embed(negative)
            length = max(positive[0].shape[1], negative_tensors[0].shape[1])
            empty = self._empty_chunk()
            tensors["prompt_embeds"] = self._pad(positive[0], length, empty)
            tensors["negative_prompt_embeds"] = self._pad(negative_tensors[0], length, empty)
            if self.xl:
                tensors["negative_pooled_prompt_embeds"] = negative_tensors[1]
        return Encoded(tensors)


class PipelineEncoder:
    """SD3 and FLUX: the pipeline's own ``encode_prompt`` (CLIP and T5), per ``::`` part."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.pipe = model.txt2img
        self.flux = model.family == "flux"
        if self.flux:
            # FLUX.1-schnell reads 256 T5 tokens, dev 512 (their model cards; diffusers' limit).
            guided = self.pipe.transformer.config.guidance_embeds
            self.max_tokens = 512 if guided else 256
            self.tokenizer = self.pipe.tokenizer_2
        else:
            self.max_tokens = 256 if self.pipe.text_encoder_3 is not None else CLIP_TOKENS
            self.tokenizer = (
                self.pipe.tokenizer_3
                if self.pipe.text_encoder_3 is not None
                else self.pipe.tokenizer
            )

    def _one(self, text: str) -> list[torch.Tensor]:
        device = self.model.device
        if self.flux:
            embeds, pooled, _ = self.pipe.encode_prompt(
                prompt=text,
                prompt_2=None,
                device=device,
                num_images_per_prompt=1,
                max_sequence_length=self.max_tokens,
            )
        else:
            embeds, _, pooled, _ = self.pipe.encode_prompt(
                prompt=text,
                prompt_2=None,
                prompt_3=None,
                device=device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=False,
                max_sequence_length=self.max_tokens,
            )
        return [embeds, pooled]

    def _dropped(self, text: str) -> tuple[int, str]:
        ids = self.tokenizer(text, truncation=False).input_ids
        limit = self.max_tokens
        if len(ids) <= limit:
            return 0, ""
        # The last kept position holds the end marker; everything from there on was cut.
        cut = ids[limit - 1 : -1] if ids[-1] == self.tokenizer.eos_token_id else ids[limit - 1 :]
        return len(cut), self.tokenizer.decode(cut, skip_special_tokens=True).strip()

    def encode(self, prompt: str, negative: str, cfg: bool) -> Encoded:
        family = FAMILIES[self.model.family]
        notes: list[str] = []
        parts = split_multi_prompt(prompt)
        texts = [_plain(p.text) for p in parts]
        if any(has_emphasis(p.text) for p in parts):
            notes.append(
                f"{family.label} models do not weigh words: (word:1.3), (word) and [word] "
                "were read as plain words."
            )
        embedded = [(p.weight, self._one(t)) for p, t in zip(parts, texts, strict=True)]
        positive = embedded[0][1] if len(embedded) == 1 else _blend(embedded)
        dropped = [self._dropped(t) for t in texts]
        tensors = {"prompt_embeds": positive[0], "pooled_prompt_embeds": positive[1]}
        if negative and not family.negative:
            notes.append(f"{family.label} models take no negative prompt; --no was not used.")
        elif cfg:
            plain = "".join(
                f.text for p in split_multi_prompt(negative) for f in parse_emphasis(p.text)
            )
            negative_tensors = self._one(plain)
            tensors["negative_prompt_embeds"] = negative_tensors[0]
            tensors["negative_pooled_prompt_embeds"] = negative_tensors[1]
        return Encoded(
            tensors,
            dropped_tokens=sum(n for n, _ in dropped),
            dropped_text=" … ".join(t for n, t in dropped if n),
            notes=tuple(notes),
        )


def _plain(text: str) -> str:
    return "".join(f.text for f in parse_emphasis(text))


def make_encoder(model: LoadedModel) -> CompelEncoder | PipelineEncoder:
    if FAMILIES[model.family].weighting:
        return CompelEncoder(model)
    return PipelineEncoder(model)
