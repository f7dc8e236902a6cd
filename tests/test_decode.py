import torch

from tokenwatt.models.decode import generate
from tokenwatt.models.load import load_model


def test_matches_model_generate_greedy_and_counts_tokens():
    model = load_model("preset:tiny-llama", "cpu", torch.float32, seed=1).model
    ids = torch.randint(0, 4096, (3, 12), generator=torch.Generator().manual_seed(0))
    marks = []
    gen = generate(model, ids, 9, mark=marks.append)
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=9,
                         min_new_tokens=9, do_sample=False, pad_token_id=0)  # fmt: skip
    assert torch.equal(gen.tokens, ref[:, 12:])
    assert marks == ["prefill", "decode", "end"]
    assert gen.tokens_generated == 27
    assert gen.decode_tokens == 24


def test_eos_is_ignored():
    model = load_model("preset:tiny-llama", "cpu", torch.float32).model
    model.generation_config.eos_token_id = list(range(4096))  # every token is EOS
    gen = generate(model, torch.zeros(1, 4, dtype=torch.long), 5)
    assert gen.tokens.shape == (1, 5)
