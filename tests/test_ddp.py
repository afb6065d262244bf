"""Data-parallel training: 2 CPU processes (gloo, via torchrun on 127.0.0.1) must end with
the same parameters as one process stepping on the whole global batch.

Tolerances: the two runs add the same per-example gradients in a different order (an
all-reduce of two half-batch means vs one full-batch mean), which changes float32 rounding
only (~1e-7 relative). Adam divides each gradient by its own running RMS, so for the few
weights whose gradient is almost zero that rounding difference becomes a visible relative
difference of their step. We therefore require mean |difference| <= 1e-7 over all weights
and max |difference| <= 1e-5 (the weights moved by ~1e-2 in these 4 steps, lr 3e-3)."""
import dataclasses

import pytest
import torch
from localhost import run_torchrun

from lmcore.checkpoint import load_checkpoint
from lmcore.ddp import build, parse_args

ARGS = ["--iters", "4", "--batch-size", "8", "--block-size", "16", "--n-layer", "1", "--n-head", "2",
        "--n-embd", "32", "--eval-interval", "4", "--eval-iters", "1", "--lr", "3e-3"]



@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path, one_thread):
    out = tmp_path / "ddp.pt"
    log = run_torchrun(["-m", "lmcore.ddp", *ARGS, "--out", str(out)])
    assert "world_size=2 step=4" in log

    single = build(parse_args(ARGS), torch.device("cpu"))  # one process, whole batch of 8
    single.run(progress=False)
    ckpt = load_checkpoint(out, restore_rng=False)
    assert ckpt["step"] == 4 and ckpt["extra"]["world_size"] == 2
    diffs = torch.cat([(p - ckpt["model"][name]).abs().flatten() for name, p in single.model.state_dict().items()])
    assert diffs.mean().item() <= 1e-7 and diffs.max().item() <= 1e-5, (diffs.mean().item(), diffs.max().item())
    # ...and the steps really moved the weights (the comparison is not trivially true)
    fresh = build(parse_args(ARGS), torch.device("cpu")).model.state_dict()
    assert max((fresh[k] - v).abs().max().item() for k, v in ckpt["model"].items()) > 1e-3


def test_build_follows_the_char_gpt_recipe():
    """Sizes left out on the command line are the recipe's (lmcore.train.char_gpt_recipe)."""
    from lmcore.train import char_gpt_recipe

    trainer = build(parse_args(["--iters", "50"]), torch.device("cpu"))
    recipe_model, recipe_train = char_gpt_recipe(trainer.raw_model.config.vocab_size, 50)
    assert trainer.raw_model.config == recipe_model
    assert trainer.config == dataclasses.replace(recipe_train, eval_interval=100,
                                                 eval_iters=10)
    small = build(parse_args(ARGS), torch.device("cpu"))
    assert (small.raw_model.config.n_embd, small.config.lr) == (32, 3e-3)
    assert small.config.min_lr == 3e-3 / 10  # min_lr follows a given lr
