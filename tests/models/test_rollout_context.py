"""The reward model's score of a rollout whose prompt fills the context up to the sampling room."""

from contextlib import contextmanager
from types import SimpleNamespace

import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from instructflow.models.reward_model import rewards
from instructflow.models.rollout import rm_scores

EOS, PAD = 1, 0


def _trainer(context: int):
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=16,
        n_positions=context,
        n_embd=8,
        n_layer=1,
        n_head=2,
        pad_token_id=PAD,
        num_labels=1,
    )
    model = GPT2ForSequenceClassification(config).eval()

    @contextmanager
    def frozen_reward_model():
        yield model

    return model, SimpleNamespace(
        rm_reads_policy_ids=True,
        tokenizer=SimpleNamespace(eos_token_id=EOS, pad_token_id=PAD),
        frozen_reward_model=frozen_reward_model,
        hyper=SimpleNamespace(invert_reward=False),
    )


def test_a_cut_off_response_at_the_end_of_the_context_is_scored_with_its_eos_in_the_context():
    # given a GPT-2 reward model of 8 positions (learned, absolute: no reading past them) and
    # two rollouts as wide as the context: a 5-token prompt with 3 sampled tokens and no EOS
    # (cut off at max_new_tokens: the data check lets prompt + sampling room = context through),
    # and a left-padded 4-token prompt whose response ended on its EOS
    model, trainer = _trainer(context=8)
    qr = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12], [PAD, 5, 6, 7, 8, 13, EOS, PAD]])
    am = torch.tensor([[1] * 8, [0, 1, 1, 1, 1, 1, 1, 0]])
    truncated = torch.tensor([True, False])
    # when the rollouts are scored (it raised IndexError: the EOS appended at position 8)
    scores = rm_scores(trainer, ["p", "q"], ["a", "b"], qr, am, truncated)
    # then the cut-off response's last token gives way to the EOS, as a response scored from
    # its text is cut (encode_for_reward), and the other row is scored as it was
    with torch.no_grad():
        cut = rewards(
            model, torch.tensor([[5, 6, 7, 8, 9, 10, 11, EOS]]), torch.ones(1, 8, dtype=torch.long)
        )
        ended = rewards(model, qr[1:], am[1:])
    assert torch.allclose(scores, torch.cat([cut, ended]))
