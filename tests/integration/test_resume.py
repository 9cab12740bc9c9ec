"""An interrupted PINN run resumes from its last checkpoint and ends where an uninterrupted run ends."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from calcium_gnn.train import train

# a short PINN schedule on the small culture: 10 steps per epoch, 60 Adam steps (20 of them data-only),
# then 3 L-BFGS steps: 7 epochs in all
SHORT_PINN = ["experiment=setup1_pinn", "model.steps_per_epoch=10", "model.pretrain_steps=20",
              "model.adam_steps=60", "model.lbfgs_steps=3", "seed=3", "evaluate=false"]


@pytest.mark.slow
def test_resumed_pinn_ends_with_the_uninterrupted_parameters(compose_train) -> None:
    whole = compose_train(*SHORT_PINN, "trainer.max_epochs=7", run="whole")
    train(whole)
    k_whole = torch.load(Path(whole.paths.output_dir) / "checkpoints" / "last.ckpt",
                         weights_only=False)["state_dict"]

    # the run is "killed" after 3 of its 7 epochs (its last checkpoint is what a kill leaves behind)
    first = compose_train(*SHORT_PINN, "trainer.max_epochs=3", run="interrupted")
    train(first)
    interrupted = torch.load(Path(first.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    assert interrupted["epoch"] == 2

    resumed = compose_train(*SHORT_PINN, "trainer.max_epochs=7", "ckpt_path=last", run="resumed")
    train(resumed)
    state = torch.load(Path(resumed.paths.output_dir) / "checkpoints" / "last.ckpt",
                       weights_only=False)["state_dict"]
    raw_k = [key for key in state if key.endswith("raw_k")]
    assert raw_k, "the PINN checkpoint holds no k"
    for key in raw_k + [key for key in state if key.endswith("raw_gamma")]:
        torch.testing.assert_close(state[key], k_whole[key], rtol=1e-6, atol=0.0)
    # and it trained on from the checkpoint instead of starting over
    assert not torch.equal(state[raw_k[0]], interrupted["state_dict"][raw_k[0]])
