"""Starting from a checkpoint (models/finetune.py): shape flags, vocabulary growth, dropout."""

import numpy as np
import pytest

import tensorlite as tl
from tensorlite.models import checkpoint as ckpt_io
from tensorlite.models.finetune import (FinetuneError, check_model_flags, extend_char_vocab, init_from_checkpoint,
                             unencodable_error)
from tensorlite.models.gpt import GPT, GPTConfig
from tensorlite.models.tokenizer import CharTokenizer


@pytest.fixture
def saved(tmp_path):
    tl.manual_seed(0)
    tokenizer = CharTokenizer("abc \n")
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=8)
    model = GPT(config)
    path = tmp_path / "ckpt.npz"
    ckpt_io.save(path, model, None, config, tokenizer, rng_state=None, iteration=7)
    return path, model, tokenizer


def test_shape_flags_must_match_or_be_omitted(saved):
    path, _, _ = saved
    checkpoint = ckpt_io.load(path)
    check_model_flags(checkpoint, {"n_layer": 1, "dropout": 0.2, "lr": 1.0}, path)
    with pytest.raises(FinetuneError, match=r"--n-embd 16 does not match .* which has n_embd = 8; omit --n-embd"):
        check_model_flags(checkpoint, {"n_layer": 1, "n_embd": 16}, path)
    with pytest.raises(FinetuneError, match="--bias False"):
        init_from_checkpoint(path, requested={"bias": False})


def test_init_from_takes_weights_and_tokenizer_and_a_new_dropout(saved):
    path, model, tokenizer = saved
    fresh, tok = init_from_checkpoint(path, text="abba cab\n", dropout=0.25)
    assert tok.to_dict() == tokenizer.to_dict()
    assert fresh.config.dropout == 0.25 and fresh.transformer.drop.p == 0.25
    for name, value in model.state_dict().items():
        assert np.array_equal(fresh.state_dict()[name], value), name


def test_unknown_characters_are_counted_and_named(saved):
    path, _, tokenizer = saved
    with pytest.raises(FinetuneError, match=r"new.txt has 3 character\(s\): 'd' 'x' 'é' that the tokenizer .* "
                                            r"--extend-vocab"):
        init_from_checkpoint(path, text="abc dxé", data_name="new.txt")
    assert unencodable_error(tokenizer, "cab", "x", path) is None


def test_extend_vocab_keeps_old_rows_under_their_characters(saved):
    path, model, tokenizer = saved
    grown_model, grown = init_from_checkpoint(path, text="a Zb!", extend_vocab=True)
    assert grown.chars == sorted(set("abc \n" + "Z!"))
    old = model.transformer.wte.weight.data
    new = grown_model.transformer.wte.weight.data
    assert new.shape == (7, 8) and grown_model.config.vocab_size == 7
    for ch in tokenizer.chars:
        assert np.array_equal(new[grown.stoi[ch]], old[tokenizer.stoi[ch]]), ch
    assert grown_model.lm_head.weight is grown_model.transformer.wte.weight  # still tied
    # The model runs on the new characters.
    logits, _ = grown_model(np.asarray([grown.encode("Z!ab")]))
    assert logits.shape == (1, 4, 7)


def test_extend_vocab_new_rows_follow_the_init_distribution():
    tokenizer = CharTokenizer("a")
    state = {"transformer.wte.weight": np.zeros((1, 64), np.float32)}
    text = "".join(chr(0x4E00 + i) for i in range(500))
    grown, new_state = extend_char_vocab(tokenizer, state, text, rng=np.random.default_rng(0))
    rows = new_state["transformer.wte.weight"]
    assert rows.dtype == np.float32 and new_state["lm_head.weight"] is rows
    new_rows = np.delete(rows, grown.stoi["a"], axis=0)
    assert abs(new_rows.std() - 0.02) < 0.001 and abs(new_rows.mean()) < 0.001
    with pytest.raises(FinetuneError, match="char tokenizer only"):
        from tensorlite.models.tokenizer import BPETokenizer
        extend_char_vocab(BPETokenizer(), state, "x")
