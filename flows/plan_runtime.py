"""`instructflow plan --runtime`'s fixed part: the peak RSS of a fresh process that has done
what every training stage does before its model counts for anything.

`python -m instructflow.flows.plan_runtime` prints it in bytes. Importing the stages is
most of it, but not all: a stage's first load of a checkpoint, its first training steps
(autograd, the fused AdamW kernels, per-thread allocator arenas), its first generation and
the curve PPO plots (matplotlib) each hold memory of their own, about 40-75 MiB on a CPU,
which an estimate of imports alone left out. So this runs a negligible GPT-2 (a few
thousand weights) through each of them: what it holds above the imports is the libraries'
first use, not the model's.
"""

import tempfile
from pathlib import Path

import instructflow.tasks.ppo
import instructflow.tasks.reward_model
import instructflow.tasks.sft  # noqa: F401  (the stages' imports are the larger part)
from instructflow.models.lm import GPT2Size, build_gpt2, load_causal_lm, save_model
from instructflow.models.lm_training import OptimConfig, encode_demonstrations, supervised_finetune
from instructflow.models.runtime import peak_rss_bytes
from instructflow.models.sampling import generate
from instructflow.models.tokenizer import train_tokenizer

TEXTS = [f"reverse the word {word}: {word[::-1]}" for word in ("stone", "apple", "river", "cloud")]
NEGLIGIBLE = GPT2Size(n_layer=1, n_head=1, n_embd=8, n_positions=32)


def _plot(folder: Path) -> None:
    """A curve saved as PNG, as PPO's stage draws one (the Agg backend, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure()
    plt.plot([0, 1], [0, 1])
    figure.savefig(folder / "curve.png")
    plt.close(figure)


def first_use_peak() -> int:
    """Peak RSS after loading, training, sampling and plotting with a negligible model."""
    tokenizer = train_tokenizer(TEXTS, 300)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_model(build_gpt2(tokenizer, NEGLIGIBLE, seed=0), tokenizer, folder)
        model, tokenizer = load_causal_lm(folder)
        examples = encode_demonstrations(tokenizer, TEXTS, TEXTS, NEGLIGIBLE.n_positions)
        quiet = lambda *_: None  # noqa: E731
        optim = OptimConfig(lr=1e-3, batch_size=2)
        supervised_finetune(
            model, examples, examples, 1, optim, tokenizer.pad_token_id, 0, quiet, quiet
        )
        generate(model, tokenizer, TEXTS, max_new_tokens=4)
        _plot(folder)
    return peak_rss_bytes()


if __name__ == "__main__":
    print(first_use_peak())
