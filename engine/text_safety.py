"""The learned second opinion on a prompt, model side: a small multilingual sentence-embedding
model scores a prompt against prototype sentences of each policy category.

The documented default is ``sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2``: a
``BertModel`` (12 layers, 384 dimensions) trained on paraphrases in 50+ languages, used with mean
pooling over 128-token sequences (its model card and ``1_Pooling/config.json``). Anything
``AutoTokenizer`` and ``AutoModel`` load works: a Hub id or a local folder.

A category's score is the highest cosine similarity between the prompt and one of its
prototypes. Long prompts are read in overlapping windows and the best window counts, so filler
in front of a request does not hide it. What a score means is the bot's policy
(``bot.core.moderation.second_opinion``); this module only measures.
"""

from __future__ import annotations

import logging
import os
import string
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from engine.loading import ModelLoadError, pick_device
from engine.requests import first_line

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"
MAX_TOKENS = 128  # the default model's max_seq_length (sentence_bert_config.json)
# Windows overlap by a quarter, so that a phrase cut by one window's end is whole in the next.
WINDOW_OVERLAP = MAX_TOKENS // 4

# The bot's classifier categories (bot.core.moderation.CLASSIFIER_CATEGORIES, by value: the
# engine does not import the bot). Prototypes are plain and clinical, in the languages of the
# term lists: the model compares meanings, so a prompt in another language still lands near.
PROTOTYPES: dict[str, tuple[str, ...]] = {
    "minors": (
        "sexual content involving a child",
        "a naked child",
        "a sexualised picture of a minor",
        "a child in lingerie",
        "an erotic picture of a young teenage girl",
        "child pornography",
        "niña desnuda",
        "criança nua",
        "enfant nu",
        "nacktes Kind",
        "bambina nuda",
        "голый ребёнок",
        "nagie dziecko",
        "çıplak çocuk",
        "naakt kind",
        "裸の子供",
        "裸体儿童",
        "알몸의 아이",
        "طفل عاري",
    ),
    "undress_photo": (
        "remove the clothes of the person in this photo",
        "undress her",
        "take off his clothes",
        "make the woman in the picture naked",
        "show her without clothes",
        "see through her clothes",
        "quítale la ropa",
        "tire a roupa dela",
        "enlève ses vêtements",
        "zieh sie aus",
        "toglile i vestiti",
        "сними с неё одежду",
        "rozbierz ją",
        "kıyafetlerini çıkar",
        "kleed haar uit",
        "服を脱がせて",
        "脱掉她的衣服",
        "옷을 벗겨",
        "اخلع ملابسها",
    ),
    "nsfw": (
        "a nude woman",
        "a naked man",
        "explicit sexual content",
        "pornography",
        "a couple having sex",
        "an erotic nude photograph",
        "mujer desnuda",
        "mulher nua",
        "femme nue",
        "nackte Frau",
        "donna nuda",
        "голая женщина",
        "naga kobieta",
        "çıplak kadın",
        "naakte vrouw",
        "裸の女性",
        "裸体女人",
        "알몸의 여자",
        "امرأة عارية",
    ),
}


def load_text_classifier(
    source: str,
    *,
    device: str = "cpu",
    prototypes: Mapping[str, Sequence[str]] | None = None,
    max_tokens: int = MAX_TOKENS,
) -> Callable[[str], dict[str, float]]:
    """Load the embedding model at ``source`` (a Hub id or a local folder) and return
    ``classify(prompt) -> {category: score}``, scores being cosine similarities in [-1, 1].

    ``prototypes`` replaces :data:`PROTOTYPES` (category → sentences). ``classify`` is safe to
    call from several threads (one prompt at a time). Raises :class:`ModelLoadError` with a
    one-line reason when the model cannot be loaded.
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    chosen = {name: tuple(sentences) for name, sentences in (prototypes or PROTOTYPES).items()}
    if not chosen or not all(chosen.values()):
        raise ValueError("every category needs at least one prototype sentence")
    transformers_logging.disable_progress_bar()
    torch_device = pick_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source)
    except Exception as exc:  # transformers raises many kinds; the operator needs one line
        offline = " (offline: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ModelLoadError(
            f"cannot load a text classifier from {source!r}{offline}: {first_line(exc, None)}"
        ) from exc
    model.to(torch_device).eval()
    overlap = min(WINDOW_OVERLAP, max_tokens // 4)

    def embed(texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-length mean-pooled embeddings of every window, and the text each belongs to."""
        windows = tokenizer(
            list(texts),
            truncation=True,
            max_length=max_tokens,
            stride=overlap,
            return_overflowing_tokens=tokenizer.is_fast,
            padding=True,
            return_tensors="pt",
        )
        owners = windows.pop("overflow_to_sample_mapping", None)
        if owners is None:  # a slow tokenizer: the first window only
            owners = torch.arange(len(texts))
        windows = windows.to(torch_device)
        hidden = model(**windows).last_hidden_state
        mask = windows["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled.float(), dim=-1), owners

    names = list(chosen)
    sentences = [s for name in names for s in chosen[name]]
    categories = torch.tensor([i for i, name in enumerate(names) for _ in chosen[name]])
    with torch.inference_mode():
        # A prototype is one short sentence: its first window is all of it.
        vectors, owners = embed(sentences)
        first = torch.ones_like(owners, dtype=torch.bool)
        first[1:] = owners[1:] != owners[:-1]
        prototype_vectors = vectors[first]
    lock = threading.Lock()

    def classify(prompt: str) -> dict[str, float]:
        with lock, torch.inference_mode():
            windows, _ = embed([prompt])
            similarity = (windows @ prototype_vectors.T).amax(dim=0).cpu()  # best window
        best = torch.full((len(names),), -1.0)
        best = best.scatter_reduce(0, categories, similarity, reduce="amax")
        return {name: float(best[i]) for i, name in enumerate(names)}

    log.info("Text classifier %s on %s (%d prototypes).", source, torch_device, len(sentences))
    return classify


# ---------------------------------------------------------------------------------------------
# A tiny random model, for tests


def _tiny_vocabulary() -> list[str]:
    # WordPiece with single characters: every word splits into its letters ("cat" → "c", "##a",
    # "##t"), so any text in these scripts has tokens; the rest is [UNK].
    letters = (
        string.ascii_lowercase
        + string.digits
        + string.punctuation
        + "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"
        + "àáâãäçèéêëìíîïñòóôõöùúûüßğışłąęćńśźż"
    )
    cjk = "のはをにでがとも裸女性子供服脱衣体人的她他"  # BERT splits these one a token already
    return [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *letters,
        *cjk,
        *(f"##{c}" for c in letters),
    ]


def build_tiny_text_model(folder: Path) -> Path:
    """Write a BERT of the real architecture at toy width, with random weights (fixed seed)
    and a generated character vocabulary, to ``folder``: what tests load through
    :func:`load_text_classifier`, with no network."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    folder = Path(folder)
    vocabulary = {token: i for i, token in enumerate(_tiny_vocabulary())}
    # BERT's own pipeline (lowercase, accents stripped, CJK characters apart, [CLS] … [SEP]),
    # built with the tokenizers library, which transformers 4 and 5 both load.
    backend = Tokenizer(models.WordPiece(vocabulary, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocabulary["[CLS]"]), ("[SEP]", vocabulary["[SEP]"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    torch.manual_seed(0)
    model = BertModel(
        BertConfig(
            vocab_size=len(vocabulary),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=512,
        )
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
