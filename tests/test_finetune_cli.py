"""tensorlite-train --init-from, --extend-vocab and --data-format sft, end to end on tiny runs."""

import json
import os

import numpy as np
import pytest

from tensorlite.models import checkpoint as ckpt_io
from tensorlite.models import convert, train
from tensorlite.models.gpt import GPT, GPTConfig
from tensorlite.models.tokenizer import CharTokenizer, tokenizer_from_dict

from conftest import QUICK, TINY_MODEL

# 2-digit sums below 100: "12+34=" + "46" + "\n" is 9 tokens, one example per row of block 8.
ADDITIONS = [(a, b) for a in range(10, 80, 10) for b in range(10, 20)]  # 70 examples
PROMPT_LEN = 6


def call(argv, capsys):
    code = train.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code, err, *fragments):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tensorlite-train: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def pretrained(corpus_file, tmp_path_factory):
    """A tiny model after 2 steps on the corpus (read-only for the tests below)."""
    out = tmp_path_factory.mktemp("pretrain")
    assert train.main(["--data", corpus_file, *TINY_MODEL, *QUICK, "--max-iters", "2", "--out-dir", str(out)]) == 0
    return str(out / "ckpt.npz")


@pytest.fixture(scope="module")
def sft_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sft") / "add.jsonl"
    return write_jsonl(path, [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a, b in ADDITIONS])


def finetune_args(init, data, out_dir, *extra):
    return ["--init-from", init, "--data", data, *QUICK, "--batch-size", "4", "--out-dir", out_dir, *extra]


def test_init_from_starts_a_fresh_run_from_the_weights_on_new_data(pretrained, tmp_path, capsys):
    text = tmp_path / "new.txt"
    text.write_text("the cat sat on the mat, then the rat ran.\n" * 40, encoding="utf-8")
    # No step: the checkpoint written at iteration 0 holds exactly the pretrained weights.
    code, out, err = call(finetune_args(pretrained, text, tmp_path / "zero", "--max-iters", "0"), capsys)
    assert code == 0, err
    assert f"initialised from {pretrained}" in out
    start, zero = ckpt_io.load(pretrained), ckpt_io.load(tmp_path / "zero" / "ckpt.npz")
    assert zero.iteration == 0 and zero.tokenizer == start.tokenizer
    for name, value in start.model_state.items():
        assert np.array_equal(zero.model_state[name], value), name

    code, out, err = call(finetune_args(pretrained, text, tmp_path / "ft", "--max-iters", "3", "--dropout", "0.1"),
                          capsys)
    assert code == 0, err
    done = ckpt_io.load(tmp_path / "ft" / "ckpt.npz")
    assert done.iteration == 3  # counted from 0, not from the pretraining's 2
    assert {state["step"] for state in done.optimizer_state["state"].values()} == {3}  # fresh AdamW
    settings = done.extra["settings"]
    assert settings["init_from"] == pretrained and settings["data_format"] == "text"
    assert settings["dropout"] == 0.1 and done.config["dropout"] == 0.1  # dropout may change
    assert (settings["n_layer"], settings["n_embd"], settings["block_size"]) == (1, 16, 8)  # from the checkpoint
    assert not np.array_equal(done.model_state["transformer.h.0.mlp.c_fc.weight"],
                              start.model_state["transformer.h.0.mlp.c_fc.weight"])
    records = [json.loads(line) for line in open(tmp_path / "ft" / "metrics.jsonl")]
    assert records[0]["event"] == "eval" and records[0]["iter"] == 0  # a new metrics file, from iteration 0
    for r in records:
        assert r["tokens"] == r["iter"] * 4 * 8  # batch_size * block_size per iteration
    plot = os.path.join(str(tmp_path / "ft"), "loss.png")
    assert out.strip().splitlines()[-1] == f"plot: tensorlite-plot {tmp_path / 'ft' / 'metrics.jsonl'} -o {plot}"


@pytest.mark.parametrize("flags, fragment", [
    (["--n-embd", "32"], "--n-embd 32 does not match"),
    (["--block-size", "16"], "--block-size 16 does not match"),
    (["--no-bias"], "--bias False does not match"),
    (["--preset", "tiny"], "--preset tiny sets --n-layer 2"),
    (["--tokenizer", "bpe"], "--tokenizer bpe does not match"),
])
def test_shape_flags_must_match_the_checkpoint(pretrained, corpus_file, tmp_path, capsys, flags, fragment):
    code, out, err = call(["--init-from", pretrained, "--data", corpus_file, "--out-dir", tmp_path / "out", *flags],
                          capsys)
    one_line_error(code, err, fragment, pretrained)
    assert not (tmp_path / "out").exists()


def test_unencodable_characters_are_counted_and_named(pretrained, tmp_path, capsys):
    text = tmp_path / "new.txt"
    text.write_text("plain text and then ÆØÅ æøå ☃ 🙂 ĳ ŋ ß \n" * 20, encoding="utf-8")
    known = set(tokenizer_from_dict(ckpt_io.load(pretrained).tokenizer).chars)
    unknown = sorted(set(text.read_text(encoding="utf-8")) - known)
    assert len(unknown) == 11
    code, _, err = call(finetune_args(pretrained, text, tmp_path / "out"), capsys)
    line = one_line_error(code, err, f"{text} has 11 character(s): " + " ".join(map(repr, unknown[:10])) + " ...",
                          "--extend-vocab")
    assert repr(unknown[10]) not in line  # only the first few are named
    assert not (tmp_path / "out").exists()


def test_extend_vocab_grows_the_embedding_and_trains(pretrained, tmp_path, capsys):
    text = tmp_path / "new.txt"
    text.write_text("smörgåsbord för två, tack! " * 40, encoding="utf-8")
    old = ckpt_io.load(pretrained)
    old_tok = tokenizer_from_dict(old.tokenizer)
    new_chars = sorted(set(text.read_text(encoding="utf-8")) - set(old_tok.chars))
    assert {"å", "ö"} <= set(new_chars)
    code, out, err = call(finetune_args(pretrained, text, tmp_path / "zero", "--extend-vocab", "--max-iters", "0"),
                          capsys)
    assert code == 0, err
    assert f"extended the vocabulary by {len(new_chars)} character(s)" in out
    grown = ckpt_io.load(tmp_path / "zero" / "ckpt.npz")
    grown_tok = tokenizer_from_dict(grown.tokenizer)
    wte = grown.model_state["transformer.wte.weight"]
    assert wte.shape == (old_tok.vocab_size + len(new_chars), 16) == (grown.config["vocab_size"], 16)
    for ch in old_tok.chars:  # every old character keeps its row, under its new id
        assert np.array_equal(wte[grown_tok.stoi[ch]], old.model_state["transformer.wte.weight"][old_tok.stoi[ch]])

    code, _, err = call(finetune_args(pretrained, text, tmp_path / "ft", "--extend-vocab", "--max-iters", "2"), capsys)
    assert code == 0, err
    # The fine-tuned run resumes on the same text: its vocabulary covers it.
    code, _, err = call(["--out-dir", tmp_path / "ft", "--resume", "--max-iters", "3", "--no-progress"], capsys)
    assert code == 0, err


def test_extend_vocab_needs_init_from_and_init_from_excludes_resume(pretrained, corpus_file, tmp_path, capsys):
    code, _, err = call(["--data", corpus_file, "--extend-vocab", "--out-dir", tmp_path / "a"], capsys)
    one_line_error(code, err, "--extend-vocab", "--init-from")
    code, _, err = call(["--init-from", pretrained, "--resume", "--out-dir", tmp_path / "b"], capsys)
    one_line_error(code, err, "--init-from", "--resume")
    code, _, err = call(["--data-format", "sft", "--out-dir", tmp_path / "c"], capsys)
    one_line_error(code, err, "--data-format sft needs --data")
    code, _, err = call(["--init-from", tmp_path / "missing.npz", "--out-dir", tmp_path / "d"], capsys)
    one_line_error(code, err, "checkpoint not found")
    assert not any((tmp_path / name).exists() for name in "abcd")
    before = open(pretrained, "rb").read()
    code, _, err = call(["--init-from", pretrained, "--data", corpus_file, "--overwrite",
                         "--out-dir", os.path.dirname(pretrained)], capsys)
    one_line_error(code, err, "is a file this run would replace")
    assert open(pretrained, "rb").read() == before


def manual_masked_loss(model, tokenizer, x):
    """Mean cross-entropy over completion positions only, the targets rebuilt from the examples."""
    logits = model(x)[0].data.astype(np.float64)  # (B, T, V)
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    answers = {f"{a}+{b}=": str(a + b) + "\n" for a, b in ADDITIONS}
    losses = []
    for row, ids in zip(log_probs, x):
        prompt = tokenizer.decode(ids[:PROMPT_LEN])
        completion = tokenizer.encode(answers[prompt])  # (3,) the tokens after the prompt
        for t, target in zip(range(PROMPT_LEN - 1, PROMPT_LEN - 1 + len(completion)), completion):
            losses.append(-row[t, target])  # position t predicts token t + 1
    return float(np.mean(losses))


def test_sft_trains_and_scores_only_the_completions(pretrained, sft_file, tmp_path, capsys):
    code, out, err = call(finetune_args(pretrained, sft_file, tmp_path / "zero", "--data-format", "sft",
                                        "--max-iters", "0"), capsys)
    assert code == 0, err
    assert f"data: {sft_file} (sft): 63 train / 7 val examples packed into 63 / 7 rows of 8 tokens; " \
           f"loss on 189 / 21 completion tokens" in out
    checkpoint = ckpt_io.load(tmp_path / "zero" / "ckpt.npz")
    tokenizer = tokenizer_from_dict(checkpoint.tokenizer)
    model = GPT(GPTConfig.from_dict(checkpoint.config))
    model.load_state_dict(checkpoint.model_state)
    model.eval()
    evaluation = json.loads(open(tmp_path / "zero" / "metrics.jsonl").readline())
    # The batches the trainer evaluated at iteration 0, drawn again from the same generators.
    from tensorlite.models.sft import SFTDataset, load_sft_file

    dataset = SFTDataset(load_sft_file(sft_file), tokenizer, val_fraction=0.1)
    for split_index, split in enumerate(("train", "val")):
        x, y = dataset.get_batch(split, 4, 8, train.make_eval_rng(1337, 0, split_index))
        assert (y[:, :PROMPT_LEN - 1] == -100).all() and (y[:, PROMPT_LEN - 1:] >= 0).all()
        assert evaluation[f"{split}_loss"] == pytest.approx(manual_masked_loss(model, tokenizer, x), rel=1e-5)

    code, _, err = call(finetune_args(pretrained, sft_file, tmp_path / "ft", "--data-format", "sft",
                                      "--max-iters", "3"), capsys)
    assert code == 0, err
    done = ckpt_io.load(tmp_path / "ft" / "ckpt.npz")
    assert done.iteration == 3 and done.extra["settings"]["data_format"] == "sft"
    # --resume keeps the SFT format and its loss
    code, out, err = call(["--out-dir", tmp_path / "ft", "--resume", "--max-iters", "4", "--no-progress"], capsys)
    assert code == 0 and "(sft)" in out, err


def test_sft_without_init_from_builds_the_vocabulary_from_the_examples(sft_file, tmp_path, capsys):
    code, out, err = call(["--data-format", "sft", "--data", sft_file, *TINY_MODEL, *QUICK, "--max-iters", "2",
                           "--out-dir", tmp_path], capsys)
    assert code == 0, err
    tokenizer = tokenizer_from_dict(ckpt_io.load(tmp_path / "ckpt.npz").tokenizer)
    assert tokenizer.chars == sorted(set("0123456789+=\n"))


def test_sft_truncation_is_stated(pretrained, tmp_path, capsys):
    data = write_jsonl(tmp_path / "long.jsonl", [{"prompt": "1+2+3+4+5=", "completion": "15"}] * 4)
    code, out, err = call(finetune_args(pretrained, data, tmp_path / "out", "--data-format", "sft",
                                        "--max-iters", "1"), capsys)
    assert code == 0, err
    assert "note: 4 example(s) longer than --block-size + 1 = 9 tokens were truncated" in out


@pytest.mark.parametrize("content, fragment", [
    ('{"prompt": "1+1=", "completion": "2"}\n{"prompt": "2+2="}\n', 'line 2: no "completion" field'),
    ('{"prompt": "1+1=", "completion": "2"}\n\n{"prompt": "2+2=", completion: 4}\n', "line 3: invalid JSON"),
    ('{"prompt": "1+1=", "completion": ""}\n{"prompt": "2+2=", "completion": "4"}\n', 'line 1: empty "completion"'),
], ids=["no-completion", "invalid-json", "empty-completion"])
def test_sft_bad_lines_name_the_line(pretrained, tmp_path, capsys, content, fragment):
    data = tmp_path / "bad.jsonl"
    data.write_text(content, encoding="utf-8")
    for init in ([], ["--init-from", pretrained]):
        code, _, err = call(["--data-format", "sft", "--data", data, *init, "--out-dir", tmp_path / "out"], capsys)
        one_line_error(code, err, f"{data} {fragment}")
    assert not (tmp_path / "out").exists()


def test_a_converted_hugging_face_checkpoint_fine_tunes(tmp_path, capsys):
    pytest.importorskip("safetensors.numpy")
    from test_hf import CHARS, hf_tensors, write_hf_dir

    write_hf_dir(tmp_path / "hf", hf_tensors(np.random.default_rng(0)))
    ckpt = tmp_path / "converted.npz"
    assert convert.main(["--from-hf", str(tmp_path / "hf"), "--out", str(ckpt)]) == 0
    text = tmp_path / "text.txt"
    rng = np.random.default_rng(1)
    text.write_text("".join(rng.choice(list(CHARS), size=3000)), encoding="utf-8")
    code, out, err = call(finetune_args(ckpt, text, tmp_path / "ft", "--max-iters", "2"), capsys)
    assert code == 0, err
    assert "2 layers, 2 heads, 8 wide, block 8, vocab 11 (char)" in out
    assert ckpt_io.load(tmp_path / "ft" / "ckpt.npz").iteration == 2
    # The HF weights are the ones trained: same shapes, same tokenizer.
    assert CharTokenizer(CHARS).to_dict() == ckpt_io.load(tmp_path / "ft" / "ckpt.npz").tokenizer
