"""Build tiny, deterministic language models on disk for tests and local demos.

No model hub is reachable where this project is built, so tests make their own models: a
tokenizer built from a small built-in corpus (the same ids on every build), a random-init config with a
fixed seed, and ``save_pretrained`` (safetensors + tokenizer files). The result loads through
:func:`open_autoglm.ml.text.loading.load_model` exactly like a real model directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "TINY_CHAT_TEMPLATE",
    "TINY_CORPUS",
    "build_tiny_bert_classifier",
    "build_tiny_bert_embedder",
    "build_tiny_gpt2",
]

# Words cover the prompts tests use; sentences repeat so BPE merges are stable.
TINY_CORPUS: tuple[str, ...] = (
    "the quick brown fox jumps over the lazy dog",
    "a graph neural network passes messages between nodes and edges",
    "language models predict the next token from the previous tokens",
    "hello world this is a tiny model for tests",
    "the cat sat on the mat and the dog sat on the log",
    "open autoglm schedules tasks and stores results",
    "embeddings map sentences to vectors so that similar sentences are close",
    "positive negative neutral sentiment classification of short reviews",
    "one two three four five six seven eight nine ten",
    "user assistant system says answers asks questions about numbers",
    "batching requests together makes serving faster on small machines",
    "it was great i loved it it was terrible i hated it",
)

# A minimal chat template so chat-formatting code paths run against tiny models too.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def _corpus(repeat: int = 20) -> list[str]:
    return list(TINY_CORPUS) * repeat


def _bpe_tokenizer(vocab_size: int) -> Any:  # PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<pad>",
    )
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def _wordpiece_vocab(specials: list[str]) -> dict[str, int]:
    """Specials, every printable ASCII character alone and as a ``##`` continuation, then the
    corpus's words by frequency (ties alphabetical): the same ids on every build.

    ``tokenizers``' WordPieceTrainer breaks frequency ties in hash-map order, so two builds
    got different vocabularies (342 or 343 tokens) and with them different token ids for the
    same text, which made tests on tiny models pass or fail by build.
    """
    import string
    from collections import Counter

    alphabet = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    words = Counter(word for line in TINY_CORPUS for word in line.split())
    ranked = sorted(words, key=lambda word: (-words[word], word))
    tokens = [*specials, *alphabet, *(f"##{c}" for c in alphabet)]
    tokens += [word for word in ranked if word not in tokens]
    return {token: i for i, token in enumerate(tokens)}


def _wordpiece_tokenizer(vocab_size: int) -> Any:  # PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = _wordpiece_vocab(specials)
    if len(vocab) > vocab_size:
        raise ValueError(f"tiny vocabulary has {len(vocab)} tokens, over {vocab_size}")
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )


def build_tiny_gpt2(
    out_dir: str | Path, *, n_layer: int = 2, n_embd: int = 64, seed: int = 0
) -> Path:
    """Write a random-init GPT-2 causal LM with a trained BPE tokenizer to ``out_dir``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    out = Path(out_dir)
    tokenizer = _bpe_tokenizer(vocab_size=300)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=4,
        # A wide init makes logits peaky, so greedy argmax has no near-ties that float noise
        # between batched and single runs could flip.
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()  # type: ignore[no-untyped-call]
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


# The BERT models' embedding rows: the WordPiece vocabulary stays under it, and a fixed size
# keeps the random init the same if the corpus grows.
_BERT_VOCAB = 400


def _tiny_bert_config(vocab_size: int, **extra: Any) -> Any:  # BertConfig
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
        pad_token_id=0,
        **extra,
    )


def build_tiny_bert_embedder(out_dir: str | Path, *, pooling: str = "mean", seed: int = 0) -> Path:
    """Write a random-init BERT encoder plus a sentence-transformers pooling config."""
    import torch
    from transformers import BertModel

    out = Path(out_dir)
    tokenizer = _wordpiece_tokenizer(vocab_size=_BERT_VOCAB)
    torch.manual_seed(seed)
    # Keep the pooler so AutoModel finds every weight it expects (no "missing keys" report).
    model = BertModel(_tiny_bert_config(_BERT_VOCAB)).eval()  # type: ignore[no-untyped-call]
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": 64,
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_mean_tokens": pooling == "mean",
                "pooling_mode_max_tokens": pooling == "max",
            }
        )
    )
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (out / "modules.json").write_text(json.dumps(modules))
    return out


def build_tiny_bert_classifier(
    out_dir: str | Path,
    *,
    labels: tuple[str, ...] = ("negative", "neutral", "positive"),
    seed: int = 0,
) -> Path:
    """Write a random-init BERT sequence classifier with ``id2label`` set to ``labels``."""
    import torch
    from transformers import BertForSequenceClassification

    out = Path(out_dir)
    tokenizer = _wordpiece_tokenizer(vocab_size=_BERT_VOCAB)
    config = _tiny_bert_config(
        _BERT_VOCAB,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()  # type: ignore[no-untyped-call]
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
