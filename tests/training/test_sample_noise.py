"""The training noise of a sample is a function of (seed, step, sample id): not of its batch,
its position in it or the rank (what makes N ranks follow one process)."""

from __future__ import annotations

import torch

from dcgd.components.latent_space import tiny_vae_config
from dcgd.method.randomness import sample_generators
from dcgd.training.sample_mean import SampleMean, id_keys
from tests.training.tiny import make_batch, tiny_module


def _part(batch: dict, order: list[int]) -> dict:
    return {k: v[order] if torch.is_tensor(v) else [v[i] for i in order] for k, v in batch.items()}


@torch.no_grad()
def test_a_samples_loss_does_not_depend_on_its_batch():
    # VAE space: the posterior sample is drawn per sample too.
    module = tiny_module(latent_space="vae", vae_config=tiny_vae_config(), loss="branches")
    batch = make_batch()

    def losses(part: dict, step: int = 0) -> torch.Tensor:
        return module.per_sample_loss(part, sample_generators(part["id"], 0, f"step{step}"))

    together = losses(batch)
    alone = torch.cat([losses(_part(batch, [0])), losses(_part(batch, [1]))])
    swapped = losses(_part(batch, [1, 0])).flip(0)
    torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(swapped, together, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(losses(batch, step=1), together)  # a new step, new noise


@torch.no_grad()
def test_step_generators_are_keyed_by_sample_id():
    module = tiny_module()
    first = module.step_generators({"id": ["x", "y"], "source": torch.zeros(2)})
    again = module.step_generators({"id": ["y"], "source": torch.zeros(1)})
    assert torch.equal(torch.randn(3, generator=first[1]), torch.randn(3, generator=again[0]))


def test_sample_mean_counts_each_sample_once():
    metric = SampleMean()
    metric.update(torch.tensor([1.0, 2.0]), id_keys(["a", "b"], torch.device("cpu")))
    # A padded shard repeats sample "a" (same id, same value).
    metric.update(torch.tensor([3.0, 1.0]), id_keys(["c", "a"], torch.device("cpu")))
    assert metric.compute().item() == 2.0  # (1 + 2 + 3) / 3, not 7 / 4
