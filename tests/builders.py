"""Builders for test (and benchmark) data: no weights or datasets can be downloaded here.

* ``build_nli_model``: an ELECTRA sequence classifier (the architecture of
  Recognai/zeroshot_selectra_medium) with a real cased WordPiece tokenizer trained
  on Spanish-like text, random but discriminative weights (large initializer
  range), and an NLI label map whose entailment index is chosen by the caller.
* ``mlsum_rows`` / ``write_mlsum``: MLSum-shaped rows (text, summary, topic, url,
  title, date) and a Hub-style parquet layout (CONFIG/SPLIT-0000N-of-0000M.parquet).
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TOPICS = ("politica", "economia", "cultura", "sociedad", "deportes")
WORDS = {
    "politica": "gobierno congreso elecciones partido ministro votación ley parlamento presidente oposición".split(),
    "economia": "mercado empresa bolsa inflación banco empleo crecimiento impuestos exportaciones euro".split(),
    "cultura": "museo película teatro novela música exposición festival artista escritor concierto".split(),
    "sociedad": "familia educación sanidad vivienda jóvenes hospital escuela ciudadanos barrio policía".split(),
    "deportes": "fútbol partido liga gol entrenador jugadores campeonato estadio victoria equipo".split(),
}
FILLER = "el la de que en los las un una por con para del al se su sus más según este esta".split()


def _sentence(rng: random.Random, topic: str, n_words: int) -> str:
    words = [rng.choice(WORDS[topic]) if rng.random() < 0.4 else rng.choice(FILLER) for _ in range(n_words)]
    words[0] = words[0].capitalize()
    return " ".join(words) + "."


def mlsum_rows(n: int, seed: int = 0, start: int = 0, empty_every: int = 0) -> list[dict]:
    """MLSum-shaped rows; summaries of 5-120 words, articles longer. Every
    ``empty_every``-th row (if > 0) has an empty or missing summary."""
    rng = random.Random(seed)
    rows = []
    for i in range(start, start + n):
        topic = rng.choice(TOPICS)
        summary = " ".join(_sentence(rng, topic, rng.randint(5, 40)) for _ in range(rng.randint(1, 3)))
        if empty_every and i % empty_every == 0:
            summary = None if (i // empty_every) % 2 else "   "
        rows.append(
            {
                "text": " ".join(_sentence(rng, topic, rng.randint(8, 30)) for _ in range(rng.randint(3, 12))),
                "summary": summary,
                "topic": topic,
                "url": f"https://elpais.com/{topic}/2019/{i:06d}.html",
                "title": _sentence(rng, topic, rng.randint(4, 10)),
                "date": f"{1 + i % 28:02d}/05/2019",
            }
        )
    return rows


MLSUM_SCHEMA = pa.schema([(name, pa.string()) for name in ("text", "summary", "topic", "url", "title", "date")])


def write_mlsum(root: Path, splits: dict[str, int], config: str | None = "es", files: int = 1,
                row_group_size: int = 64, empty_every: int = 0, seed: int = 0) -> Path:
    """A Hub-style parquet dataset: ROOT/CONFIG/SPLIT-0000K-of-0000N.parquet."""
    base = Path(root) / config if config else Path(root)
    base.mkdir(parents=True, exist_ok=True)
    for s, (split, n) in enumerate(splits.items()):
        rows = mlsum_rows(n, seed=seed + s, empty_every=empty_every)
        per_file = -(-n // files)
        for k in range(files):
            chunk = rows[k * per_file:(k + 1) * per_file]
            table = pa.Table.from_pylist(chunk, schema=MLSUM_SCHEMA)
            pq.write_table(table, base / f"{split}-{k:05d}-of-{files:05d}.parquet", row_group_size=row_group_size)
    return Path(root)


def corpus_sentences(n: int = 400) -> list[str]:
    rows = mlsum_rows(n, seed=123)
    labels = "política cultura sociedad economia deportes ciencia tecnología politica internacional salud"
    return [r["text"] for r in rows] + [f"Esta noticia habla de {labels}."] * 20


def build_tokenizer(path: Path, max_length: int = 128):
    """A real cased WordPiece tokenizer (ELECTRA's kind), trained in a second."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import ElectraTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    wp = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    wp.train_from_iterator(corpus_sentences(), vocab_size=1200, min_frequency=1)
    vocab = wp.get_vocab()
    tok = ElectraTokenizerFast(vocab=vocab, do_lower_case=False, strip_accents=False, model_max_length=max_length)
    tok.save_pretrained(str(path))
    return tok


def build_nli_model(path: Path, entailment_index: int = 2, layers: int = 2, hidden: int = 32, heads: int = 2,
                    ffn: int = 64, max_length: int = 128, initializer_range: float = 0.4, seed: int = 0) -> Path:
    """A tiny ELECTRA NLI model + tokenizer saved to ``path`` (loadable with from_pretrained)."""
    import torch
    from transformers import ElectraConfig, ElectraForSequenceClassification

    path = Path(path)
    tok = build_tokenizer(path, max_length=max_length)
    names = ["contradiction", "neutral", "entailment"]
    if entailment_index == 0:
        names = ["entailment", "neutral", "contradiction"]
    elif entailment_index is None:
        names = ["LABEL_0", "LABEL_1", "LABEL_2"]
    config = ElectraConfig(
        vocab_size=tok.vocab_size, embedding_size=hidden, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=ffn, max_position_embeddings=max(max_length, 512),
        initializer_range=initializer_range, id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)}, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = ElectraForSequenceClassification(config).eval()
    model.save_pretrained(str(path))
    return path


def build_offset_nli_model(path: Path, offset: float = 3000.0) -> Path:
    """``build_nli_model`` with ``offset`` added to every class's logit: the same probabilities in exact
    arithmetic (a softmax ignores a common offset) and in fp32, but bf16 keeps 8 bits of mantissa (steps of 16
    at 3000), so the classes' differences round away and bf16 fails the load guard (engine.guard) here."""
    import torch
    from transformers import AutoModelForSequenceClassification

    path = build_nli_model(path)
    model = AutoModelForSequenceClassification.from_pretrained(str(path))
    with torch.no_grad():
        model.classifier.out_proj.bias += offset
    model.save_pretrained(str(path))
    return path


def selectra_medium_shape(path: Path, max_length: int = 512) -> Path:
    """A SELECTRA-medium-shaped model (12 layers, hidden 384, 6 heads, FFN 1536) with random weights."""
    return build_nli_model(path, layers=12, hidden=384, heads=6, ffn=1536, max_length=max_length,
                           initializer_range=0.02)


def build_bpe_tokenizer(path: Path, max_length: int = 64):
    """A byte-level BPE tokenizer laid out as RoBERTa's (``<s> A </s></s> B </s>``, no token type ids)."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus_sentences(), vocab_size=800, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    bpe._tokenizer.post_processor = RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                  cls_token="<s>", pad_token="<pad>", unk_token="<unk>", model_max_length=max_length,
                                  model_input_names=["input_ids", "attention_mask"])
    tok.save_pretrained(str(path))
    return tok


def _unigram(specials: list, unk: str, vocab_size: int):
    """A SentencePiece-style Unigram model (NFKC, Metaspace) trained on the Spanish-like corpus."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    uni = Tokenizer(models.Unigram())
    uni.normalizer = normalizers.NFKC()
    uni.pre_tokenizer = pre_tokenizers.Metaspace()
    uni.decoder = decoders.Metaspace()
    uni.train_from_iterator(corpus_sentences(), trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                                        unk_token=unk))
    return uni


def build_unigram_tokenizer(path: Path, max_length: int = 64, truncation_side: str = "right"):
    """A SentencePiece-style Unigram tokenizer (Metaspace), laid out as DeBERTa-v2's multilingual NLI models
    (``[CLS] A [SEP] B [SEP]`` with token type ids 0 and 1)."""
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    uni = _unigram(["[PAD]", "[CLS]", "[SEP]", "[UNK]"], "[UNK]", 600)
    cls, sep = uni.token_to_id("[CLS]"), uni.token_to_id("[SEP]")
    uni.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                            special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok = PreTrainedTokenizerFast(tokenizer_object=uni, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                                  unk_token="[UNK]", model_max_length=max_length, truncation_side=truncation_side,
                                  model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    tok.save_pretrained(str(path))
    return tok


def build_xlmr_tokenizer(path: Path, max_length: int = 128):
    """A SentencePiece-style Unigram tokenizer laid out as XLM-RoBERTa's (``<s> A </s></s> B </s>``, no token
    type ids, ``<pad>`` at 1)."""
    from tokenizers.processors import RobertaProcessing
    from transformers import PreTrainedTokenizerFast

    uni = _unigram(["<s>", "<pad>", "</s>", "<unk>"], "<unk>", 700)
    uni.post_processor = RobertaProcessing(("</s>", uni.token_to_id("</s>")), ("<s>", uni.token_to_id("<s>")))
    tok = PreTrainedTokenizerFast(tokenizer_object=uni, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                  cls_token="<s>", pad_token="<pad>", unk_token="<unk>", model_max_length=max_length,
                                  model_input_names=["input_ids", "attention_mask"])
    tok.save_pretrained(str(path))
    return tok


def build_bert_tokenizer(path: Path, max_length: int = 128):
    """A real cased WordPiece tokenizer saved as BERT's (``BertTokenizerFast``)."""
    from transformers import BertTokenizerFast

    electra = build_tokenizer(path, max_length=max_length)
    tok = BertTokenizerFast(vocab=electra.get_vocab(), do_lower_case=False, strip_accents=False,
                            model_max_length=max_length)
    tok.save_pretrained(str(path))
    return tok


ARCHITECTURES = ("electra", "deberta-v2", "bert", "xlm-roberta")


def build_arch_nli_model(path: Path, arch: str, layers: int = 2, hidden: int = 32, heads: int = 2, ffn: int = 64,
                         max_length: int = 128, initializer_range: float = 0.4, seed: int = 0,
                         entailment_index: int | None = None, position_buckets: int = 32) -> Path:
    """A tiny NLI sequence classifier of architecture ``arch`` (``ARCHITECTURES``) with a real tokenizer of its
    family and random, discriminative weights. DeBERTa-v2 is built as mDeBERTa-v3-xnli is: relative attention
    with p2c/c2p, log position buckets, shared attention keys, LayerNorm'd relative embeddings, no absolute
    positions, no token types, entailment at index 0 (others: index 2)."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DebertaV2Config,
        DebertaV2ForSequenceClassification,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )

    if arch == "electra":
        return build_nli_model(path, entailment_index=2 if entailment_index is None else entailment_index,
                               layers=layers, hidden=hidden, heads=heads, ffn=ffn, max_length=max_length,
                               initializer_range=initializer_range, seed=seed)
    path = Path(path)
    entail = (0 if arch == "deberta-v2" else 2) if entailment_index is None else entailment_index
    names = ["entailment", "neutral", "contradiction"] if entail == 0 else ["contradiction", "neutral", "entailment"]
    common = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn,
                  initializer_range=initializer_range, id2label=dict(enumerate(names)),
                  label2id={n: i for i, n in enumerate(names)})
    if arch == "deberta-v2":
        tok = build_unigram_tokenizer(path, max_length=max_length)
        config = DebertaV2Config(vocab_size=len(tok), max_position_embeddings=max(max_length, 512),
                                 relative_attention=True, pos_att_type=["p2c", "c2p"],
                                 position_buckets=position_buckets, max_relative_positions=-1, share_att_key=True,
                                 norm_rel_ebd="layer_norm", position_biased_input=False, type_vocab_size=0,
                                 pad_token_id=tok.pad_token_id, hidden_act="gelu", **common)
        cls = DebertaV2ForSequenceClassification
    elif arch == "bert":
        tok = build_bert_tokenizer(path, max_length=max_length)
        config = BertConfig(vocab_size=len(tok), max_position_embeddings=max(max_length, 512),
                            pad_token_id=tok.pad_token_id, **common)
        cls = BertForSequenceClassification
    elif arch == "xlm-roberta":
        tok = build_xlmr_tokenizer(path, max_length=max_length)
        config = XLMRobertaConfig(vocab_size=len(tok), max_position_embeddings=max(max_length, 512) + 2,
                                  type_vocab_size=1, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id, **common)
        cls = XLMRobertaForSequenceClassification
    else:
        raise ValueError(f"unknown architecture {arch!r}")
    torch.manual_seed(seed)
    cls(config).eval().save_pretrained(str(path))
    return path


def mdeberta_base_shape(path: Path, max_length: int = 512) -> Path:
    """An mDeBERTa-v3-base-shaped NLI model (12 layers, hidden 768, 12 heads, FFN 3072, 256 position buckets)
    with random weights and the tiny Unigram tokenizer (the 250k-row embedding only costs a lookup)."""
    return build_arch_nli_model(path, "deberta-v2", layers=12, hidden=768, heads=12, ffn=3072, max_length=max_length,
                                initializer_range=0.02, position_buckets=256)


def build_text_classifier(path: Path, labels=("politica", "economia", "cultura", "deportes"), arch: str = "electra",
                          seed: int = 0, problem_type: str | None = None) -> Path:
    """A tiny supervised text classifier (no entailment label): ``arch``'s tiny model of
    ``build_arch_nli_model`` (real tokenizer, random discriminative weights) with ``id2label`` = ``labels``."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = Path(path)
    build_arch_nli_model(path, arch, seed=seed)
    config = AutoConfig.from_pretrained(str(path))
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}
    config.num_labels = len(labels)
    if problem_type:
        config.problem_type = problem_type
    import torch

    torch.manual_seed(seed)  # the new head: initialised with the config's (large) initializer range
    model = AutoModelForSequenceClassification.from_pretrained(str(path), config=config,
                                                               ignore_mismatched_sizes=True).eval()
    model.save_pretrained(str(path))
    return path


def write_pulled(path: Path, n: int, labelled: int, sample: int, seed: int = 0, teacher_accuracy: float = 0.55,
                 topics=TOPICS, status: str = "Validated", agent: str = "ana", teacher=None) -> list[dict]:
    """A `zs-ray pull` file (``zs_ray.servers.pull.SCHEMA``) of ``n`` topic texts (``_sentence``: a topic's words
    among filler, so the topic is learnable from the words), whose zero-shot predictions are right with
    probability ``teacher_accuracy`` (higher scores when right). The first ``labelled`` records carry a
    person's label (the true topic; ``status``, ``agent``), the first ``sample`` of all records the round-1
    mark (``metadata sample: round-1``); the rest are unlabelled (status Default). ``teacher`` (texts -> the
    engine's ``[{"labels", "scores"}]``, e.g. a ``ZeroShotClassifier`` over ``topics``) makes the predictions
    instead. Returns the rows, each with its true ``topic``."""
    from zs_ray.servers.pull import SCHEMA

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = rng.choice(topics)
        right = rng.random() < teacher_accuracy
        top = topic if right else rng.choice([t for t in topics if t != topic])
        first = rng.uniform(0.5, 0.95) if right else rng.uniform(0.3, 0.8)
        rest = [t for t in topics if t != top]
        shares = [rng.random() for _ in rest]
        scores = [first] + [(1 - first) * s / sum(shares) for s in shares]
        text = " ".join(_sentence(rng, topic, rng.randint(10, 20)) for _ in range(2))
        rows.append({"id": f"es-test-{i}", "text": text, "inputs": [("text", text)], "prediction_labels": [top, *rest],
                     "prediction_scores": scores, "prediction_agent": "teacher",
                     "annotation_labels": [topic] if i < labelled else None,
                     "annotation_agent": agent if i < labelled else None,
                     "status": status if i < labelled else "Default", "multi_label": False,
                     "metadata": [("sample", "round-1")] if i < sample else [], "topic": topic})
    if teacher is not None:
        for row, out in zip(rows, teacher([r["text"] for r in rows])):
            row["prediction_labels"], row["prediction_scores"] = list(out["labels"]), [float(x) for x in out["scores"]]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "topic"} for r in rows], schema=SCHEMA),
                   str(path))
    return rows
