"""LoRAs and textual-inversion embeddings on a loaded model, through diffusers: LoRAs with
``load_lora_weights`` as PEFT adapters and ``set_adapters`` for their weights, embeddings with
``load_textual_inversion``. Engine thread only.

Loaded adapters stay on the model (the most recently used :data:`LORAS_PER_MODEL`), so a second
job with the same LoRA pays nothing to load it. A job without LoRAs disables them: PEFT's
layers then return the base layer's output exactly, so it is bit-for-bit the job it would have
been had no LoRA ever been loaded.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

from compel import BaseTextualInversionManager

from engine.catalogue import AdapterEntry, AdapterFolder
from engine.families import FAMILIES
from engine.loading import LoadedModel, file_identity
from engine.requests import NotAvailable, UnknownLora, first_line

log = logging.getLogger(__name__)

LORAS_PER_MODEL = 8  # LoRAs kept loaded per model; the least recently used are unloaded
_UNKNOWN = (("", 0.0),)  # an active set no request has: forces the next job to set its own


def unknown_lora(name: str, folder: AdapterFolder) -> UnknownLora:
    names = [e.name for e in folder.entries()]
    listed = f" LoRAs: {', '.join(names[:25])}." if names else " No LoRAs are installed."
    return UnknownLora(f"There is no LoRA called '{name}'.{listed}")


class Adapters:
    """The LoRAs and embeddings of one loaded model."""

    def __init__(
        self,
        model: LoadedModel,
        loras: AdapterFolder,
        embeddings: AdapterFolder,
        data_dir: Path | None = None,
    ) -> None:
        self.model = model
        self.lora_folder = loras
        self.embedding_folder = embeddings
        self.data_dir = data_dir or Path(".")  # where file hashes are cached
        # LoRA name (casefolded) → (PEFT adapter name, file identity). PEFT adapter names key
        # torch ModuleDicts, which refuse '.', so LoRAs get numbered adapter names.
        self._loras: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._numbers = iter(range(1, 1 << 30))
        self._active: tuple[tuple[str, float], ...] = ()
        self._embeddings: dict[str, str] = {}  # token → file identity
        self._refused: dict[str, str] = {}  # token → why it cannot load here

    # -- LoRA --------------------------------------------------------------------------------

    def apply(self, loras: tuple[tuple[str, float], ...]) -> list[list[Any]]:
        """Make ``loras`` the active set (in this order, with these weights); return the repro
        record ``[[name, weight, identity], ...]``. Raises UnknownLora / NotAvailable."""
        pipe = self.model.txt2img
        if not loras:
            if self._active:
                pipe.disable_lora()
                self._active = ()
            return []
        adapters: list[str] = []
        record: list[list[Any]] = []
        try:
            for name, weight in loras:
                adapter, identity = self._load(name, keep={n.casefold() for n, _ in loras})
                adapters.append(adapter)
                record.append([name, weight, identity])
        except Exception:
            self._active = _UNKNOWN  # a failed load may have left adapters on: reset next time
            raise
        if loras != self._active:
            pipe.enable_lora()
            pipe.set_adapters(adapters, adapter_weights=[w for _, w in loras])
            self._active = loras
        return record

    def _load(self, name: str, keep: set[str]) -> tuple[str, str]:
        key = name.casefold()
        loaded = self._loras.get(key)
        if loaded is not None:
            self._loras.move_to_end(key)
            return loaded
        entry = self.lora_folder.find(name)
        if entry is None:
            raise unknown_lora(name, self.lora_folder)
        info = self.model.info
        family = FAMILIES[info.family]
        if entry.family is not None and entry.family != info.family:
            raise NotAvailable(
                f"LoRA '{entry.name}' is for {FAMILIES[entry.family].label}; model "
                f"'{info.name}' is {family.label}."
            )
        adapter = f"lora{next(self._numbers)}"
        pipe = self.model.txt2img
        try:
            pipe.load_lora_weights(str(entry.path), adapter_name=adapter)
        except Exception as exc:  # diffusers and PEFT raise many kinds on a mismatched file
            self._forget(adapter)
            raise NotAvailable(
                f"LoRA '{entry.name}' cannot be used with model '{info.name}' "
                f"({family.label}): {first_line(exc, 200)}"
            ) from exc
        if not any(adapter in names for names in pipe.get_list_adapters().values()):
            # diffusers only warns when no key of the file matched a module: refuse instead of
            # running a LoRA that silently does nothing.
            raise NotAvailable(
                f"LoRA '{entry.name}' does not fit model '{info.name}' ({family.label}): "
                "none of its layers exist in this model."
            )
        identity = file_identity([entry.path], self.data_dir)
        self._loras[key] = (adapter, identity)
        self._evict(keep)
        log.info("LoRA %s loaded into %s.", entry.name, info.name)
        return adapter, identity

    def _forget(self, adapter: str) -> None:
        pipe = self.model.txt2img
        if any(adapter in names for names in pipe.get_list_adapters().values()):
            pipe.delete_adapters(adapter)

    def _evict(self, keep: set[str]) -> None:
        while len(self._loras) > LORAS_PER_MODEL:
            victim = next((k for k in self._loras if k not in keep), None)
            if victim is None:
                return
            adapter, _ = self._loras.pop(victim)
            self.model.txt2img.delete_adapters(adapter)
            self._active = ()  # set_adapters again on the next job

    def loaded_loras(self) -> list[str]:
        return list(self._loras)

    # -- embeddings --------------------------------------------------------------------------

    def embeddings_in(self, texts: list[str]) -> tuple[list[list[str]], list[str]]:
        """Load the embeddings whose tokens appear in ``texts``; return the repro record
        ``[[token, identity], ...]`` and notes for tokens this model cannot use."""
        used: list[list[str]] = []
        notes: list[str] = []
        for entry in self.embedding_folder.entries():
            pattern = re.compile(rf"(?<![\w-]){re.escape(entry.name)}(?![\w-])", re.IGNORECASE)
            if not any(pattern.search(t) for t in texts):
                continue
            token = entry.name.lower()  # CLIP lowercases text before matching added tokens
            if token not in self._embeddings and token not in self._refused:
                self._load_embedding(entry, token)
            if token in self._embeddings:
                used.append([token, self._embeddings[token]])
            else:
                notes.append(self._refused[token])
        return used, notes

    def _load_embedding(self, entry: AdapterEntry, token: str) -> None:
        info = self.model.info
        family = FAMILIES[info.family]
        if not family.embeddings or (entry.family is not None and entry.family != info.family):
            fits = FAMILIES[entry.family].label if entry.family else "another model"
            self._refused[token] = (
                f"Embedding '{entry.name}' is for {fits}; model '{info.name}' "
                f"({family.label}) read it as a plain word."
            )
            return
        pipe = self.model.txt2img
        try:
            if info.family == "sdxl":
                # SDXL embeddings hold one tensor per text encoder (clip_l, clip_g).
                from safetensors.torch import load_file

                state = load_file(str(entry.path))
                pipe.load_textual_inversion(
                    state["clip_l"],
                    token=token,
                    text_encoder=pipe.text_encoder,
                    tokenizer=pipe.tokenizer,
                )
                pipe.load_textual_inversion(
                    state["clip_g"],
                    token=token,
                    text_encoder=pipe.text_encoder_2,
                    tokenizer=pipe.tokenizer_2,
                )
            else:
                pipe.load_textual_inversion(str(entry.path), token=token)
        except Exception as exc:
            self._refused[token] = (
                f"Embedding '{entry.name}' cannot be used with model '{info.name}' "
                f"({first_line(exc, 200)}); it was read as a plain word."
            )
            return
        self._embeddings[token] = file_identity([entry.path], self.data_dir)
        log.info("Embedding %s loaded into %s.", entry.name, info.name)


class TextualInversionTokens(BaseTextualInversionManager):
    """Compel's hook for multi-vector embeddings: ``token`` expands to ``token token_1 …`` (as
    diffusers' ``maybe_convert_prompt`` does), for one tokenizer. Prompts without an added token
    pass through untouched, so their encoding never depends on what else is loaded."""

    def __init__(self, pipe: Any, tokenizer: Any) -> None:
        self.pipe = pipe
        self.tokenizer = tokenizer

    def expand_textual_inversion_token_ids_if_necessary(self, token_ids: list[int]) -> list[int]:
        # Embedding tokens are added after the base vocabulary.
        if not any(i >= self.tokenizer.vocab_size for i in token_ids):
            return token_ids
        text = self.tokenizer.decode(token_ids)
        text = self.pipe.maybe_convert_prompt(text, self.tokenizer)
        return self.tokenizer.encode(text, add_special_tokens=False)
