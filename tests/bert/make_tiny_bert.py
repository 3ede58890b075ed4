"""Saves a small random BERT with `transformers` (config.json, model.safetensors,
tokenizer.json, vocab.txt) and what `transformers` computes for a few impressions
(expected.json): token ids, attention masks, last hidden states and pooled outputs.
ktrack's BERT must give the same (`bert_equals_transformers`, run by .ci/run).

usage: python tests/bert/make_tiny_bert.py OUT_DIR
"""

import json
import sys
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizer

WORDS = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "mild", "moderate", "severe", "medial", "lateral", "joint", "space", "narrowing",
    "no", "small", "large", "effusion", "osteophyte", "##s", "subchondral", "sclerosis",
    "varus", "valgus", "alignment", "of", "the", "knee", "and", "with", "is", "seen",
    "tibial", "femoral", "compartment", "early", "signs", "change", "##d", "degenerative",
    ".", ",", "-",
]

IMPRESSIONS = [
    "Mild medial joint space narrowing.",
    "Large effusion, with medial osteophytes and subchondral sclerosis.",
    "No effusion",
    "Degenerative change of the lateral tibial compartment; varus alignment is seen.",
]


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    # transformers 5 reads the vocabulary from `vocab` (4.x named it `vocab_file`).
    tok = BertTokenizer(vocab=str(out / "vocab.txt"), do_lower_case=True)
    assert tok.convert_tokens_to_ids("medial") == WORDS.index("medial"), "vocabulary not read"
    cfg = BertConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = BertModel(cfg).eval()
    # Larger weights than BERT's init (std 0.02), so every layer's non-linearity matters.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    max_len = 24
    enc = tok(IMPRESSIONS, padding="max_length", truncation=True, max_length=max_len,
              return_tensors="pt")
    with torch.no_grad():
        o = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    (out / "expected.json").write_text(json.dumps({
        "texts": IMPRESSIONS,
        "max_len": max_len,
        "input_ids": enc["input_ids"].tolist(),
        "attention_mask": enc["attention_mask"].tolist(),
        "hidden": o.last_hidden_state.tolist(),
        "pooled": o.pooler_output.tolist(),
    }))
    print(f"wrote a BERT ({cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}) to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
