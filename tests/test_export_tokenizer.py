"""The exported preset's tokenizer (issue 24): every id survives decode then encode, alone and
in sequences, so a client that counts tokens from the streamed text (AIPerf, --prompts-file)
counts what the server generated."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, dict[str, Any]]:
    """The tiny preset exported with its word tokenizer, read back as a server would."""
    from transformers import AutoTokenizer

    from tokenwatt.models.export import _config_dict, export_preset, with_word_tokenizer

    tmp = tmp_path_factory.mktemp("tok")
    ckpt = with_word_tokenizer(export_preset("tiny-llama", 0, "float32", cache_dir=tmp / "cache"),
                               tmp / "ckpt")  # fmt: skip
    return ckpt, AutoTokenizer.from_pretrained(ckpt), _config_dict(ckpt)


def _encode(tok: Any, texts: list[str], special: bool = False) -> list[list[int]]:
    return tok(texts, add_special_tokens=special)["input_ids"]


@pytest.mark.parametrize("skip", [False, True])  # True: the text a server streams (vLLM)
def test_every_id_round_trips_alone(exported, skip: bool) -> None:
    _, tok, config = exported
    ids = list(range(config["vocab_size"]))
    assert len(tok) == len(ids)  # the tokenizer covers the model's vocabulary, no more
    texts = tok.batch_decode([[i] for i in ids], skip_special_tokens=skip)
    bad = [(i, t, e) for i, t, e in zip(ids, texts, _encode(tok, texts)) if e != [i]]
    assert not bad, f"{len(bad)} ids do not round-trip, e.g. {bad[:5]}"


def test_random_sequences_round_trip(exported) -> None:
    _, tok, config = exported
    rng = random.Random(24)
    seqs = [[rng.randrange(config["vocab_size"]) for _ in range(rng.randint(1, 64))]
            for _ in range(300)]  # fmt: skip
    seqs.append([2, 2128, 1, 0, 1000, 2])  # specials beside words that begin with their names
    texts = tok.batch_decode(seqs, skip_special_tokens=False)
    assert _encode(tok, texts) == seqs
    assert tok.batch_decode(seqs, skip_special_tokens=True) == texts  # nothing is dropped
    # No BOS is added: a client counting with either setting agrees with the server.
    assert _encode(tok, texts, special=True) == seqs


def test_text_is_words_and_the_named_ids_follow_the_config(exported) -> None:
    ckpt, tok, config = exported
    assert tok.decode([5, 2128, 7]) == "t5 t2128 t7"
    named = tok.convert_ids_to_tokens([config["bos_token_id"], config["eos_token_id"], 0])
    assert named == ["<s>", "</s>", "<unk>"] and tok.all_special_ids == []
    assert _encode(tok, ["t5  t6\nt2128 nonsense"]) == [[5, 6, 2128, 0]]  # unknown: <unk>
    assert (ckpt / "tokenizer.json").is_file() and (ckpt / "model.safetensors").is_file()


def test_bos_and_eos_may_share_an_id() -> None:
    from tokenwatt.models.export import word_tokenizer

    tok = word_tokenizer(50, bos_id=49, eos_id=49)  # GPT-2 style: one end-of-text id
    assert tok.convert_ids_to_tokens([49, 0, 1]) == ["</s>", "<unk>", "t1"]
    seq = [49, 1, 2, 0, 48, 49]
    assert tok(tok.decode(seq), add_special_tokens=False)["input_ids"] == seq
