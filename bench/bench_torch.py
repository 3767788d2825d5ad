"""The `seed` network's train step in JAX (the kit's Haiku model, optax SGD, MSE) against the
same network in PyTorch, same batch, same machine; ratio > 1 means JAX is faster.

PyTorch comes with the `bench` extra (`make bench` installs it); without it this is skipped.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench.common import median_seconds
from kit import config as config_io
from kit.model import networks

STEPS = 20
REPEATS = 3  # the median: a single timing moves by 20% here


def jax_rate(batch: int, images: np.ndarray, targets: np.ndarray) -> float:
    config = config_io.preset("seed")
    net = networks.build(config.model, targets.shape[1])
    params, state = net.init(jax.random.PRNGKey(0), images, True)
    optimizer = optax.sgd(config.train.learning_rate)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            out, _ = net.apply(p, state, None, x, True)
            return jnp.mean((out - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    x, y = jnp.asarray(images), jnp.asarray(targets)
    carry = [params, opt_state]

    def run_steps():
        for _ in range(STEPS):
            carry[0], carry[1], loss = step(carry[0], carry[1], x, y)
        jax.block_until_ready(loss)

    run_steps()
    return batch * STEPS / median_seconds(run_steps, REPEATS)


def torch_rate(batch: int, images: np.ndarray, targets: np.ndarray) -> float:
    import torch
    from torch import nn

    config = config_io.preset("seed").model
    layers: list[nn.Module] = []
    channels = 1
    for width in config.widths:
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels = width
    side = 96 // 2 ** len(config.widths)
    layers += [nn.Flatten(), nn.Linear(channels * side * side, config.dense), nn.ReLU(),
               nn.Linear(config.dense, targets.shape[1])]
    net = nn.Sequential(*layers)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    x = torch.from_numpy(images[:, None])
    y = torch.from_numpy(targets)

    def step():
        optimizer.zero_grad()
        loss = ((net(x) - y) ** 2).mean()
        loss.backward()
        optimizer.step()

    def run_steps():
        for _ in range(STEPS):
            step()

    run_steps()
    return batch * STEPS / median_seconds(run_steps, REPEATS)


def run(batch: int = 32) -> dict:
    rng = np.random.default_rng(0)
    images = rng.random((batch, 96, 96), dtype=np.float32)
    targets = rng.uniform(-0.5, 0.5, (batch, 30)).astype(np.float32)
    out = {"batch": batch, "jax_seed_images_per_s": round(jax_rate(batch, images, targets), 1)}
    try:
        import torch
    except ImportError:
        out["torch"] = "not installed (pip install -e '.[bench]')"
        return out
    out["torch_version"] = torch.__version__
    out["torch_threads"] = torch.get_num_threads()
    out["torch_seed_images_per_s"] = round(torch_rate(batch, images, targets), 1)
    out["jax_over_torch"] = round(out["jax_seed_images_per_s"] / out["torch_seed_images_per_s"], 2)
    return out


if __name__ == "__main__":
    print(run())
