"""Tests for the byte-level BPE tokenizer trained from scratch."""

from instructflow.models.tokenizer import EOS_TOKEN, PAD_TOKEN, train_tokenizer

TEXTS = [
    "the capital of Velm is Orsk. hello world",
    "Q: reverse the word stone\nA: enots",
    "Q: what is 12 + 30?\nA: 42",
    "counting 1 2 3 4 5 6 7 8 9 10 11 12 123 1234",
] * 10


def test_round_trip_is_exact() -> None:
    # given: a tokenizer trained on a small corpus
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    # when / then: text (leading space, newline, unseen words) decodes back unchanged
    for text in [" hello 123", "Q: what is 7 + 8?\nA: 15", "  zebra\tqux  ", "naïve ✓"]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text


def test_every_digit_is_its_own_token() -> None:
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    # when: numbers that appear often in the corpus are encoded
    tokens = tokenizer.convert_ids_to_tokens(tokenizer.encode(" 1234 + 42"))
    # then: no token holds more than one digit
    for token in tokens:
        assert sum(ch.isdigit() for ch in token) <= 1, tokens
    assert [t for t in tokens if t.isdigit()] == ["1", "2", "3", "4", "4", "2"]


def test_special_tokens() -> None:
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.bos_token == EOS_TOKEN
    assert tokenizer.pad_token == PAD_TOKEN
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.padding_side == "right"
    # encoding adds no special tokens of its own: callers decide where EOS goes
    assert tokenizer.encode(" hi") == tokenizer.encode(" hi", add_special_tokens=False)
    # special tokens are single tokens when they occur in text
    assert tokenizer.encode(EOS_TOKEN) == [tokenizer.eos_token_id]


def test_deterministic_for_same_texts() -> None:
    first = train_tokenizer(TEXTS, vocab_size=300)
    second = train_tokenizer(iter(TEXTS), vocab_size=300)
    assert first.get_vocab() == second.get_vocab()
    assert first.encode(TEXTS[1]) == second.encode(TEXTS[1])


def test_vocab_size_is_an_upper_bound() -> None:
    tokenizer = train_tokenizer(TEXTS, vocab_size=280)
    assert 258 <= len(tokenizer) <= 280  # 256 bytes + 2 specials at least


def test_digest_names_the_mapping_not_the_object() -> None:
    from instructflow.models.tokenizer import tokenizer_digest

    # given two tokenizers trained alike, and one with another vocabulary size
    same_a = train_tokenizer(TEXTS, vocab_size=300)
    same_b = train_tokenizer(TEXTS, vocab_size=300)
    other = train_tokenizer(TEXTS, vocab_size=280)
    # then equal mappings share a digest and a different vocabulary does not
    assert tokenizer_digest(same_a) == tokenizer_digest(same_b)
    assert tokenizer_digest(same_a) != tokenizer_digest(other)
    # and a different pad token changes it too (ids of padding differ)
    same_b.pad_token = EOS_TOKEN
    assert tokenizer_digest(same_a) != tokenizer_digest(same_b)
