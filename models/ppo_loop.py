"""The PPO loop: draw prompts, step the trainer, report, checkpoint, stop when asked.

`ppo_train` runs a `instructflow.models.ppo.PPOTrainer` to its configured number of
iterations (or continues a resumed one); everything outside the math
(logging, the gold monitor, where checkpoints go) arrives as callbacks.
"""

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from instructflow.models.checkpoints import interrupt, stop_requested
from instructflow.models.ppo import PPOTrainer

IterationFn = Callable[[int, dict[str, float]], bool | None]
MonitorFn = Callable[[list[int], list[str]], float]


def draw_prompts(trainer: PPOTrainer, n_prompts: int) -> list[int]:
    """Indices of this iteration's prompts: without replacement when there are enough."""
    size = trainer.hyper.rollout_batch
    if size <= n_prompts:
        return torch.randperm(n_prompts, generator=trainer.generator)[:size].tolist()
    return torch.randint(0, n_prompts, (size,), generator=trainer.generator).tolist()


def _gold(trainer: PPOTrainer, monitor: MonitorFn | None, chosen: list[int], exp) -> float:
    """The monitor's mean over the batch; split across processes, each scores its own rows."""
    if monitor is None:
        return float("nan")
    if not trainer.row_seeded:
        return monitor(chosen, exp.texts)
    mine = chosen[exp.first_row : exp.first_row + len(exp.texts)]
    total = trainer.group.sum_floats(monitor(mine, exp.texts) * len(mine))[0]
    return total / len(chosen)


def ppo_train(
    trainer: PPOTrainer,
    prompts: Sequence[str],
    ptx_blocks: Tensor | None,
    on_iteration: IterationFn,
    monitor: MonitorFn | None = None,
    checkpoint: Callable[[PPOTrainer], None] | None = None,
    checkpoint_every: int = 10,
) -> PPOTrainer:
    """Run iterations `trainer.iteration .. hyper.iterations - 1` (a resumed trainer continues).

    Per iteration `i`: `trainer.step`, then `monitor(prompt_indices, responses)`
    (the gold score: logged as ppo/reward_gold, never used for training), then
    `on_iteration(i, metrics)`; if it returns True the run stops after this
    iteration. `checkpoint(trainer)` is called after every `checkpoint_every`
    iterations and after the last one, with `trainer.iteration = i + 1`.
    `ptx_blocks` ([N, block] packed pretraining ids) is read only when
    `ptx_gamma > 0`.
    """
    if not trainer.stopped and trainer.iteration == 0 and trainer.normalizer.count == 0:
        trainer.fit_reward_normalizer(prompts)
    while trainer.iteration < trainer.hyper.iterations and not trainer.stopped:
        index = trainer.iteration
        chosen = draw_prompts(trainer, len(prompts))
        metrics, exp = trainer.step([prompts[i] for i in chosen], ptx_blocks)
        metrics["ppo/reward_gold"] = _gold(trainer, monitor, chosen, exp)
        trainer.stopped = bool(on_iteration(index, metrics))
        last = trainer.stopped or trainer.iteration == trainer.hyper.iterations
        interrupted = stop_requested()
        if checkpoint is not None and (
            trainer.iteration % checkpoint_every == 0 or last or interrupted
        ):
            checkpoint(trainer)
        if interrupted:
            # Numbered as the progress line and the checkpoint are: iterations done, from 1.
            raise interrupt(f"stopped after iteration {trainer.iteration}; checkpoint kept")
    return trainer
