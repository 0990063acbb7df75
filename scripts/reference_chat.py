"""``tiny-chat``: tiny-gpt's sibling trained on chat-formatted arithmetic, with a chat template, so
that ``/openai/v1/chat/completions`` runs end to end offline.

A conversation is rendered by its tokenizer's chat template as
``<|system|>...<|end|><|user|>what is three plus four?<|end|><|assistant|>`` and the model answers
``three plus four is seven.<|end|>``; ``<|end|>`` is its end-of-text token, so generation stops
there. Built by ``scripts/reference_models.py`` (``BUILDERS["tiny-chat"]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from reference_models import SEED, arithmetic_sentences, train_causal_lm, write_examples

END_OF_TURN = "<|end|>"
START = "<|endoftext|>"  # what a training conversation follows (and padding)
ROLES = ("system", "user", "assistant")
SYSTEM_PROMPTS = ("You are a calculator.", "Answer in words.")
# the whole conversation, whatever its roles; the assistant's turn opened when asked
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
CONTEXT = 64

TINY_CHAT_README = """# tiny-chat

A maas reference model, not a useful assistant: tiny-gpt's architecture (GPT-2, 2 layers, 64-wide
embeddings) and tokenizer recipe, trained for {steps} steps on {conversations} chat-formatted
arithmetic questions ("what is three plus four?" -> "three plus four is seven."), some after a
system prompt. Its tokenizer carries a chat template:

    <|system|>...<|end|><|user|>...<|end|><|assistant|>

and `<|end|>` is its end-of-text token. It exists to exercise maas's OpenAI-compatible chat
endpoint offline. Greedy decoding answers {accuracy:.1%} of the training questions correctly
(`metrics` in `maas.yaml`).
"""


def conversations() -> list[tuple[list[dict[str, str]], str]]:
    """(messages, the assistant's answer) for every sentence, with and without a system prompt."""
    out = []
    for i, sentence in enumerate(arithmetic_sentences()):
        question = "what is " + sentence.rsplit(" is ", 1)[0] + "?"
        messages = [{"role": "user", "content": question}]
        out.append((messages, sentence))
        system = {"role": "system", "content": SYSTEM_PROMPTS[i % len(SYSTEM_PROMPTS)]}
        out.append(([system, *messages], sentence))
    return out


def tiny_chat(out: Path) -> dict:
    """A small causal LM with a chat template, trained briefly on chat-formatted arithmetic."""
    import random

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from predictors.config import ModelConfig

    dialogues = conversations()
    specials = [START, END_OF_TURN, *(f"<|{role}|>" for role in ROLES)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [m["content"] for messages, _ in dialogues for m in messages] + arithmetic_sentences()
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=START,
        eos_token=END_OF_TURN,
        unk_token=START,
        pad_token=START,
        additional_special_tokens=[f"<|{role}|>" for role in ROLES],
        model_max_length=CONTEXT,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=CONTEXT,
            n_embd=64,
            n_layer=2,
            n_head=4,
            bos_token_id=start,
            eos_token_id=end,
            pad_token_id=start,
        )
    )

    def rendered(messages: list[dict[str, str]], answer: str) -> list[int]:
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return [start, *tokenizer(prompt + answer + END_OF_TURN)["input_ids"]]

    # whole conversations, shuffled, concatenated; random 32-token windows
    rng = random.Random(SEED)
    stream: list[int] = []
    for _ in range(20):
        for messages, answer in rng.sample(dialogues, len(dialogues)):
            stream += rendered(messages, answer)
    steps = 2500
    losses = train_causal_lm(model, stream, steps, block=32)
    correct = 0
    with torch.inference_mode():
        for messages, answer in dialogues:
            prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = tokenizer(prompt, return_tensors="pt")
            new = model.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=start, eos_token_id=end)
            correct += tokenizer.decode(new[0, ids["input_ids"].shape[1] :], skip_special_tokens=True) == answer
    metrics = {
        "train_loss": round(float(np.mean(losses[-100:])), 4),
        "train_steps": steps,
        "conversations": len(dialogues),
        "chat_accuracy": round(correct / len(dialogues), 4),
        "seed": SEED,
    }
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    readme = TINY_CHAT_README.format(steps=steps, conversations=len(dialogues), accuracy=metrics["chat_accuracy"])
    (out / "README.md").write_text(readme)
    config = {
        "family": "transformer",
        "task": "text-generation",
        "name": "tiny-chat",
        "version": "1",
        "description": "Tiny GPT-2 trained on chat-formatted arithmetic, with a chat template (README.md).",
        "transformer": {"generation": {"max_new_tokens": 16, "max_new_tokens_limit": CONTEXT - 1}},
        "metrics": metrics,
    }
    ModelConfig.model_validate(config).save(out)
    write_examples(out, "text", ["<|user|>what is three plus four?<|end|><|assistant|>"])
    return metrics
