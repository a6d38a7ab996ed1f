"""Model FLOPs of a training step (bench/mfu.py), against counts worked out by hand."""

from transformers import GPT2Config, GPT2LMHeadModel

from bench.mfu import body_matmul_params, head_params, step_flops


def tiny_gpt2() -> GPT2LMHeadModel:
    return GPT2LMHeadModel(
        GPT2Config(vocab_size=100, n_layer=2, n_head=2, n_embd=32, n_positions=64)
    )


def test_matmul_weights_are_the_blocks_and_the_tied_head_once():
    model = tiny_gpt2()
    # per block: qkv 32 x 96, attention out 32 x 32, MLP 32 x 128 and 128 x 32
    assert body_matmul_params(model) == 2 * (3072 + 1024 + 4096 + 4096)
    # the head is the token embedding (tied), 100 x 32, counted once and only as the head
    assert head_params(model) == 3200


def test_step_flops_count_real_tokens_and_only_the_head_positions_used():
    model = tiny_gpt2()
    # 10 real tokens in a batch padded to 8 columns, logits needed at 3 positions:
    # 10 * (6 * 24576 + 12 * 2 layers * 8 * 32) + 3 * 6 * 3200
    assert step_flops(model, real_tokens=10, width=8, head_positions=3) == 1_593_600


def test_an_untied_token_table_is_a_lookup_and_its_head_a_matmul():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False,
    ))  # fmt: skip
    # q, k, v, o 32 x 32 each, gate and up 32 x 64, down 64 x 32; the 100 x 32 table is not counted
    assert body_matmul_params(model) == 4 * 1024 + 3 * 2048
    assert head_params(model) == 3200
