"""Tagging and causal-LM heads train with the adapter and travel with it."""
import torch

import adapters_lib
from tests.conftest import tiny_inputs, tiny_model


def _train_steps(model, x, labels, steps=5):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = model(**x, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def test_tagging_head_gives_per_token_logits_and_learns(tmp_path):
    model = adapters_lib.init(tiny_model("roberta"))
    model.add_adapter("ner", "lora[r=4]")
    model.add_tagging_head("ner", num_labels=5, id2label={i: f"T{i}" for i in range(5)})
    model.train_adapter("ner")
    x = tiny_inputs(batch=2, seq=6)
    labels = torch.randint(0, 5, (2, 6), generator=torch.Generator().manual_seed(0))
    losses = _train_steps(model, x, labels)
    assert losses[-1] < losses[0]
    model.eval()
    logits = model(**x).logits
    assert logits.shape == (2, 6, 5)
    model.save_adapter(tmp_path, "ner")
    fresh = adapters_lib.init(tiny_model("roberta"))
    fresh.load_adapter(tmp_path, set_active=True)
    assert fresh.stitch.heads["ner"].config.labels() == [f"T{i}" for i in range(5)]
    torch.testing.assert_close(fresh(**x).logits, logits)


def test_causal_lm_head_starts_from_the_embeddings_and_learns():
    model = adapters_lib.init(tiny_model("llama"))
    model.add_adapter("lm", "seq_bn")
    head = model.add_causal_lm_head("lm")
    torch.testing.assert_close(head.layers[0].weight, model.get_input_embeddings().weight)
    model.train_adapter("lm")
    x = tiny_inputs(batch=2, seq=8)
    losses = _train_steps(model, x, x["input_ids"])
    assert losses[-1] < losses[0]
    assert model(**x).logits.shape == (2, 8, model.config.vocab_size)
