"""The probe's response likelihood: batching and padding must not change it."""

import torch

from instructflow.models.batching import IGNORE_INDEX, encode_pair
from instructflow.models.lm import load_causal_lm
from tests.models.test_lm import save_tiny_checkpoint
from tests.scripts import load_script


def test_response_loglik_sums_the_response_tokens_of_each_pair_alone(tmp_path):
    # given a tiny causal LM and responses of different lengths (so batches are padded)
    model, tokenizer = load_causal_lm(save_tiny_checkpoint("gpt2", tmp_path / "lm"))
    model.eval()
    prompts = ["reverse stone", "what is 2 + 3?", "hi"]
    responses = ["enots", "5", "hello there, how can I help"]
    # when the probe scores them two at a time
    batched = load_script("rm_probe").response_loglik(
        model, tokenizer, prompts, responses, batch_size=2
    )
    # then each equals log p(response + EOS | prompt) summed token by token from its own,
    # unpadded forward pass
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        ids, labels = encode_pair(tokenizer, prompt, response, 10_000)
        with torch.no_grad():
            logprobs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
        n_prompt = sum(1 for label in labels if label == IGNORE_INDEX)
        expected = sum(logprobs[t - 1, ids[t]].item() for t in range(n_prompt, len(ids)))
        assert abs(batched[i].item() - expected) < 1e-4, (i, batched[i].item(), expected)
