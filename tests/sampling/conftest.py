"""A tiny chat model folder: a random Qwen2 and a byte-level BPE tokenizer
trained here (with ChatML's special tokens), as `codeio-jax serve` reads them."""

import pytest

TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "Predict the output of the function for the input below.",
    "The answer is 42. The input was {'x': [1, 2, 3]} and the output is 6.",
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    "for i in range(10):\n    print(i * i)\n",
] * 20


@pytest.fixture(scope="session")
def chat_folder(tmp_path_factory):
    pytest.importorskip("torch")
    import torch
    import transformers as tr

    from tasks.tokenizer_training import train_bpe

    folder = tmp_path_factory.mktemp("tiny_chat")
    tokenizer_path = train_bpe(TEXTS, folder, "qwen2", vocab_size=320)
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tokenizer_path)).get_vocab_size()
    config = tr.Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                            tie_word_embeddings=False)
    torch.manual_seed(0)
    model = tr.Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.1)
    model.save_pretrained(folder)
    return folder
