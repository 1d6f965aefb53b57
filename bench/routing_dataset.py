"""Simulated traffic for judging a router's choices: tasks, and which model answers each well.

    python bench/routing_dataset.py [--seed S] [--tasks N] [--types T] [--models weak,strong] --out tasks.csv

The model of the data (what ``generate`` draws, all from one ``random.Random(seed)``):

* Task types come from ``CATALOGUE`` (the first ``--types`` of it, at most ``len(CATALOGUE)``),
  each named as traffic names it (summarize, classify, extract_json, code_generation,
  math_word_problem, ...) and each with a band for its *gap*: how much more often the strongest
  model answers it well than the weakest. Summaries, classification and tagging have almost none;
  translation and extraction a little; document questions, SQL, code review some; algebra,
  logic puzzles, math word problems and multi-step code a lot.
* A type's share of traffic is Zipf-like: the types are shuffled, and the k-th (from 1) gets a
  share proportional to ``1 / k``. Each task's type is drawn from those shares.
* Per type, the strongest model (the last of ``--models``) answers well with a probability drawn
  uniformly from 0.85–0.97; the weakest (the first) with that minus a gap drawn uniformly from
  the type's band (never below 0.02). A model in between, when three or more are named, gets a
  probability between the two, at a fraction of the gap drawn near its place in the list, the
  fractions sorted so that a model later in the list is never worse at a type than one before it.
* Each task's prompt is text of a length typical of its type (a short ticket to classify, a long
  report to summarise), a lead-in line saying what is asked, then words drawn from a small
  vocabulary; lengths are drawn log-uniformly from the type's word range.
* Each task's label per model is 1 (that model answers it well) with the model's probability
  for the type, else 0, drawn independently.

The CSV (what ``read_csv`` accepts, whoever wrote it): a header, then one row per task.

    id,task_type,prompt,<model>,<model>[,<model>...]

``id`` unique and non-empty; ``task_type`` non-empty; ``prompt`` non-empty text (quoted as the
csv module quotes); then two or more label columns, one per simulated model, each cell ``0`` or
``1``. A label column's header is the model's name (lowercase letters, digits, ``_ . -``, as a
provider name must be), and the columns go from the weakest (cheapest) model to the strongest.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llm_router.types import InvalidInput

__all__ = ["CATALOGUE", "TaskType", "Task", "Dataset", "generate", "read_csv", "write_csv", "true_rates"]

FIXED_COLUMNS = ("id", "task_type", "prompt")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True, slots=True)
class TaskType:
    name: str
    gap: tuple[float, float]
    """The band the weakest model's shortfall against the strongest is drawn from."""
    words: tuple[int, int]
    """The band a prompt's length in words is drawn from."""
    lead: str
    """The prompt's first line: what is asked."""


# The order matters: ``--types T`` takes the first T, so the first 16 already mix small, middle
# and large gaps.
CATALOGUE: tuple[TaskType, ...] = (
    TaskType("summarize", (0.00, 0.04), (180, 700), "Summarise the following report in three sentences."),
    TaskType("classify", (0.00, 0.03), (15, 80), "Classify this support ticket as billing, bug, account or other."),
    TaskType("extract_json", (0.03, 0.10), (60, 250), "Extract the names, dates and amounts below as JSON."),
    TaskType("translate", (0.02, 0.08), (30, 200), "Translate the following text into French."),
    TaskType("code_generation", (0.25, 0.40), (40, 160), "Write a Python function that does the following."),
    TaskType("math_word_problem", (0.35, 0.55), (40, 120), "Solve this word problem and give the final number."),
    TaskType("qa_over_document", (0.08, 0.18), (250, 900), "Answer the question at the end from the document."),
    TaskType("sql_query", (0.15, 0.30), (40, 140), "Write one SQL query for the request below, given the schema."),
    TaskType("algebra", (0.40, 0.60), (20, 80), "Solve for x and show each step."),
    TaskType("multi_step_code", (0.40, 0.60), (120, 400), "Change this module as described, in several steps."),
    TaskType("sentiment", (0.00, 0.03), (10, 60), "Is the sentiment of this review positive, negative or mixed?"),
    TaskType("chat_reply", (0.02, 0.08), (20, 120), "Reply helpfully to the customer's message."),
    TaskType("code_review", (0.15, 0.30), (150, 500), "Review this diff and list the bugs you find."),
    TaskType("rewrite_tone", (0.00, 0.05), (40, 200), "Rewrite this email in a friendlier tone."),
    TaskType("data_analysis", (0.15, 0.30), (80, 300), "From the figures below, say what changed and why."),
    TaskType("logic_puzzle", (0.35, 0.55), (50, 150), "Solve the puzzle; explain the reasoning briefly."),
    TaskType("keyword_tagging", (0.00, 0.03), (30, 150), "List five keywords for this article."),
    TaskType("title_generation", (0.00, 0.03), (50, 300), "Suggest a title for this text."),
    TaskType("proofreading", (0.01, 0.05), (60, 300), "Correct the spelling and grammar below."),
    TaskType("code_explain", (0.08, 0.18), (60, 250), "Explain what this code does."),
    TaskType("legal_analysis", (0.20, 0.35), (200, 800), "Which clauses below put the supplier at risk, and why?"),
    TaskType("planning", (0.15, 0.30), (40, 160), "Plan the project below as dated steps."),
    TaskType("regex_writing", (0.20, 0.35), (20, 80), "Write a regular expression matching what is described."),
    TaskType("long_form_writing", (0.08, 0.18), (30, 120), "Write a 600-word article on the topic below."),
)

_VOCABULARY = (
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "was", "on", "be", "by", "this", "are",
    "from", "or", "at", "an", "which", "have", "not", "but", "all", "can", "has", "more", "one", "were", "their",
    "there", "been", "if", "would", "will", "about", "what", "when", "so", "who", "no", "they", "its", "out", "up",
    "customer", "order", "invoice", "payment", "account", "report", "team", "project", "system", "data", "value",
    "result", "number", "total", "month", "year", "week", "day", "time", "price", "cost", "budget", "plan", "step",
    "change", "error", "issue", "request", "service", "user", "file", "table", "column", "query", "function",
    "module", "test", "list", "item", "record", "field", "date", "amount", "name", "city", "country", "market",
    "sales", "growth", "revenue", "margin", "risk", "supplier", "contract", "clause", "term", "notice", "party",
    "server", "network", "latency", "release", "version", "feature", "update", "support", "ticket", "message",
    "email", "reply", "review", "because", "however", "therefore", "although", "while", "after", "before", "during",
    "since", "until", "unless", "whether", "each", "first", "second", "third", "last", "next", "new", "old",
    "large", "small", "high", "low", "early", "late", "quickly", "carefully", "clearly",
)


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    task_type: str
    prompt: str
    labels: tuple[int, ...]
    """Per model, in the dataset's order: 1 when that model answers this task well."""


@dataclass(frozen=True, slots=True)
class Dataset:
    models: tuple[str, ...]
    """From the weakest (cheapest) to the strongest."""
    tasks: tuple[Task, ...]


def generate(seed: int, tasks: int = 5000, types: int = 16, models: Sequence[str] = ("weak", "strong")) -> Dataset:
    """Draw a dataset as the module docstring describes; the same arguments give the same dataset.

    Raises:
        InvalidInput: fewer than two models, a model name that is not a provider name or appears
            twice, a task or type count out of range.
    """
    names = _check_models(models, "models")
    if not 1 <= types <= len(CATALOGUE):
        raise InvalidInput("types", f"{types} task types asked", allowed=f"1 to {len(CATALOGUE)}")
    if tasks < 1:
        raise InvalidInput("tasks", f"{tasks} tasks asked", allowed="1 or more")
    rng = random.Random(seed)
    chosen = list(CATALOGUE[:types])
    ranked = chosen[:]
    rng.shuffle(ranked)
    weights = [1 / (k + 1) for k in range(len(ranked))]
    rates = {t.name: _rates(rng, t, len(names)) for t in chosen}
    out: list[Task] = []
    for i in range(tasks):
        kind = rng.choices(ranked, weights)[0]
        labels = tuple(int(rng.random() < p) for p in rates[kind.name])
        out.append(Task(f"t{i:05d}", kind.name, _prompt(rng, kind), labels))
    return Dataset(names, tuple(out))


def _rates(rng: random.Random, kind: TaskType, n_models: int) -> list[float]:
    """Per model, weakest first: the probability it answers a task of ``kind`` well."""
    strong = rng.uniform(0.85, 0.97)
    weak = max(0.02, strong - rng.uniform(*kind.gap))
    places = sorted(
        min(1.0, max(0.0, k / (n_models - 1) + rng.uniform(-0.15, 0.15))) for k in range(1, n_models - 1)
    )
    return [weak, *(weak + (strong - weak) * f for f in places), strong]


def _prompt(rng: random.Random, kind: TaskType) -> str:
    low, high = kind.words
    n = int(math.exp(rng.uniform(math.log(low), math.log(high))))
    body = rng.choices(_VOCABULARY, k=n)
    # Sentences of 8-20 words, so the text reads like text to a tokenizer.
    sentences: list[str] = []
    while body:
        size = rng.randint(8, 20)
        words, body = body[:size], body[size:]
        sentences.append(" ".join(words).capitalize() + ".")
    return kind.lead + "\n\n" + " ".join(sentences)


def _check_models(models: Sequence[str], where: str) -> tuple[str, ...]:
    names = tuple(m.strip() for m in models)
    if len(names) < 2:
        raise InvalidInput(where, f"{len(names)} model(s) named", allowed="two or more, weakest first")
    for name in names:
        if not _NAME.match(name):
            raise InvalidInput(where, f"{name!r} is not a model name", allowed="lowercase letters, digits, _ . -")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidInput(where, f"{', '.join(twice)} named twice")
    return names


def write_csv(dataset: Dataset, path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow([*FIXED_COLUMNS, *dataset.models])
        for t in dataset.tasks:
            out.writerow([t.id, t.task_type, t.prompt, *t.labels])


def read_csv(path: Path) -> Dataset:
    """A dataset of the shape the module docstring gives, from any writer.

    Raises:
        InvalidInput: naming the file, the line and the column that is wrong.
    """
    with path.open(encoding="utf-8", newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None:
            raise InvalidInput(f"{path}", "the file is empty", allowed="a header, then one row per task")
        if tuple(header[:3]) != FIXED_COLUMNS:
            raise InvalidInput(f"{path}:1", f"the header starts {header[:3]}", allowed="id,task_type,prompt,<models>")
        models = _check_models(header[3:], f"{path}:1 label columns")
        tasks: list[Task] = []
        seen: set[str] = set()
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise InvalidInput(f"{path}:{line}", f"{len(row)} cells", allowed=f"{len(header)}, as in the header")
            tid, kind, prompt, *cells = row
            for column, value in (("id", tid), ("task_type", kind), ("prompt", prompt)):
                if not value.strip():
                    raise InvalidInput(f"{path}:{line} {column}", "empty", allowed="non-empty text")
            if tid in seen:
                raise InvalidInput(f"{path}:{line} id", f"{tid!r} used twice", allowed="a unique id per task")
            seen.add(tid)
            for model, cell in zip(models, cells, strict=True):
                if cell.strip() not in ("0", "1"):
                    raise InvalidInput(f"{path}:{line} {model}", f"{cell!r}", allowed="0 or 1")
            tasks.append(Task(tid, kind, prompt, tuple(int(c) for c in cells)))
    if not tasks:
        raise InvalidInput(f"{path}", "no tasks", allowed="one row per task after the header")
    return Dataset(models, tuple(tasks))


def true_rates(dataset: Dataset) -> dict[str, tuple[float, ...]]:
    """Per task type, per model: the share of its tasks the labels say that model answers well."""
    sums: dict[str, list[int]] = {}
    counts: dict[str, int] = {}
    for t in dataset.tasks:
        acc = sums.setdefault(t.task_type, [0] * len(dataset.models))
        for k, label in enumerate(t.labels):
            acc[k] += label
        counts[t.task_type] = counts.get(t.task_type, 0) + 1
    return {kind: tuple(s / counts[kind] for s in acc) for kind, acc in sums.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--types", type=int, default=16)
    parser.add_argument("--models", default="weak,strong", help="simulated models, weakest first (default weak,strong)")
    parser.add_argument("--out", type=Path, required=True, help="the CSV to write")
    args = parser.parse_args(argv)
    try:
        data = generate(args.seed, args.tasks, args.types, args.models.split(","))
    except InvalidInput as e:
        parser.error(str(e))
    write_csv(data, args.out)
    rates = true_rates(data)
    print(f"{len(data.tasks)} tasks, {len(rates)} task types, models {', '.join(data.models)} -> {args.out}")
    for kind, values in sorted(rates.items(), key=lambda kv: kv[1][0] - kv[1][-1]):
        n = sum(1 for t in data.tasks if t.task_type == kind)
        print(f"  {kind:<18} {n:>6}  " + "  ".join(f"{m} {v:.2f}" for m, v in zip(data.models, values, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
