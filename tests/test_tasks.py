"""lmcore.tasks: the reference programs, the tokenizer, the masks, exact match, ablation,
and the shipped checkpoint (checksum recorded in assets/models/TASKS_MODEL.md)."""
import hashlib
import random
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcore import tasks
from lmcore.generate import generate
from lmcore.transformer import GPT, GPTConfig

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "assets" / "models" / "tasks_gpt.pt"
letters = st.text(alphabet=tasks.LETTERS, min_size=1, max_size=15)


@given(letters)
def test_string_programs_agree_with_python_builtins(s):
    assert tasks.copy(s) == s
    assert tasks.reverse(s) == s[::-1]
    assert tasks.sort(s) == "".join(sorted(s))
    table = str.maketrans(tasks.LETTERS, tasks.LETTERS[1:] + tasks.LETTERS[0])
    assert tasks.shift(s) == s.translate(table)
    assert tasks.run_program("sort then reverse", s) == "".join(sorted(s, reverse=True))
    assert tasks.run_program("flip", s) == s[::-1]


@given(st.sampled_from(tasks.LETTERS), letters, st.integers(0, 10**6), st.integers(0, 10**6))
def test_count_and_add_agree_with_python(letter, s, a, b):
    assert tasks.count(letter, s) == str(s.count(letter))
    assert tasks.add(str(a), str(b)) == str(a + b)
    assert tasks.run_program("add", f"{a}+{b}") == str(a + b)
    assert tasks.run_program("count", f"{letter} in {s}") == str(s.count(letter))


def test_bad_operations_are_refused():
    with pytest.raises(ValueError, match="op='jump'"):
        tasks.steps("jump")
    with pytest.raises(ValueError, match="compose"):
        tasks.steps("add then sort")
    with pytest.raises(ValueError, match="few-shot"):
        tasks.few_shot_example("count", 2, 4, random.Random(0))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tasks.TaskTokenizer().encode("copy xyz →")


@settings(max_examples=50)
@given(st.integers(0, 10**6))
def test_examples_are_right_and_round_trip_through_the_tokenizer(seed):
    tok, rng = tasks.TaskTokenizer(), random.Random(seed)
    for _ in range(5):
        ex = tasks.training_example(rng)
        assert tok.decode(tok.encode(ex.text)) == ex.text
        if ex.prompt.startswith(ex.op + " "):  # named (not few-shot): check the answer
            arg = ex.prompt.split(" ", 1 + ex.op.count(" then ") * 2)[-1][:-2]
            assert tasks.run_program(ex.op, arg) == ex.answer


def test_few_shot_examples_show_the_operation():
    ex = tasks.few_shot_example("reverse", 3, 5, random.Random(1))
    shots = ex.prompt.split(f" {tasks.SEP} ")
    assert len(shots) == 4 and shots[-1].endswith(tasks.ARROW)
    for shot in shots[:-1]:
        arg, out = shot.split(f" {tasks.ARROW} ")
        assert out == arg[::-1]
    assert ex.answer == shots[-1].split()[0][::-1]


def test_eval_sets_are_seeded_and_have_the_lengths_asked_for():
    a = tasks.eval_set("sort", [3, 9], 4, seed=2)
    assert a == tasks.eval_set("sort", [3, 9], 4, seed=2)
    assert a != tasks.eval_set("sort", [3, 9], 4, seed=3)
    assert [e.length for e in a] == [3] * 4 + [9] * 4
    assert all(len(e.answer) == e.length for e in a)


def test_only_answer_tokens_are_scored():
    tok = tasks.TaskTokenizer()
    ex = tasks.Example("reverse ABC →", "CBA", "reverse", 3)
    x, y = tasks.encode_batch([ex, tasks.Example("copy A →", "A", "copy", 1)], tok)
    scored = tok.decode(y[0][y[0] != -100])
    assert scored == "CBA <eos>"
    assert (y[1] != -100).sum() == 2 and (x[1, 4:] == 0).all()  # right padding
    shots = tasks.Example("AB → BA ; CD →", "DC", "reverse", 2)
    x, y = tasks.encode_batch([shots], tok, all_answers=True)
    assert tok.decode(y[0][y[0] != -100]) == "BA ; DC <eos>"


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=tasks.TaskTokenizer().vocab_size, block_size=64, n_layer=2,
               n_head=2, n_embd=16)
    return GPT(GPTConfig(**{**cfg, **kw})).eval()


def test_exact_match_is_what_greedy_decoding_writes():
    """Teacher forcing gives the greedy answer iff every answer argmax is right: check it
    on a model whose answers are the model's own greedy outputs (so some are right)."""
    tok, model = tasks.TaskTokenizer(), _model(3)
    exs = tasks.eval_set("copy", [1, 2], 20)
    own = []
    for ex in exs:  # relabel: the answer is what greedy decoding writes (cut at eos)
        ids = tok.encode(ex.prompt)
        out = generate(model, ids, 3, greedy=True, stop_tokens=[tok.stoi[tasks.EOS]])[len(ids):]
        done = out[-1] == tok.stoi[tasks.EOS] and tok.stoi[tasks.EOS] not in out[:-1]
        own.append((ex._replace(answer=tok.decode(out[:-1])), done))
    relabelled = [e for e, _ in own]
    got = tasks.exact_match(model, relabelled, tok)
    assert got.tolist() == [d and "+" not in e.answer and " " not in e.answer
                            and all(c in tasks.LETTERS + tasks.DIGITS for c in e.answer)
                            for e, d in own]
    assert not tasks.exact_match(model, exs, tok).all()


def test_ablation_zeroes_the_chosen_heads_and_only_inside_the_block():
    tok, model = tasks.TaskTokenizer(), _model(1)
    x, _ = tasks.encode_batch(tasks.eval_set("sort", [5], 4), tok)
    before = model(x).logits
    with tasks.ablate_heads(model, []):
        assert torch.equal(model(x).logits, before)
    with tasks.ablate_heads(model, [(0, 1)]):
        one = model(x).logits
    with tasks.ablate_heads(model, [(0, 0), (0, 1)]):
        both = model(x).logits
    assert not torch.allclose(one, before) and not torch.allclose(both, one)
    attn = model.blocks[0].attn
    saved = attn.proj.weight.data.clone()
    attn.proj.weight.data[:, :8] = 0  # head 0's columns: same as ablating head 0 too
    with tasks.ablate_heads(model, [(0, 1)]):
        assert torch.allclose(model(x).logits, both, atol=1e-6)
    attn.proj.weight.data = saved
    assert torch.equal(model(x).logits, before)  # hooks are gone
    with pytest.raises(ValueError, match=r"head \(2, 0\)"), tasks.ablate_heads(model, [(2, 0)]):
        pass


def test_training_learns_copy_quickly():
    tok, model = tasks.TaskTokenizer(), _model(0, n_embd=32)

    def sample(rng):
        return tasks.make_example("copy", rng.randint(1, 3), rng)

    losses = tasks.train_tasks(model, tok, 150, sample=sample, batch_size=32, lr=3e-3)
    assert losses[-1] < 0.3 * losses[0]
    assert tasks.accuracy(model, tasks.eval_set("copy", [2], 50), tok) > 0.8


def test_shipped_checkpoint_matches_its_checksum_and_loads():
    text = (ROOT / "assets" / "models" / "TASKS_MODEL.md").read_text(encoding="utf-8")
    size, sha = re.search(r"`tasks_gpt\.pt` \| ([\d,]+) \| `([0-9a-f]{64})`", text).groups()
    data = CKPT.read_bytes()
    assert len(data) == int(size.replace(",", ""))
    assert hashlib.sha256(data).hexdigest() == sha
    model, tok = tasks.load_tasks_gpt(CKPT)
    assert not model.training
    assert tasks.accuracy(model, tasks.eval_set("reverse", [4], 20, seed=5), tok) > 0.9
    assert tasks.answer(model, tok, "copy ABCD") == "ABCD"
