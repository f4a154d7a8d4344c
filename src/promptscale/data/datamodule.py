"""One LightningDataModule for every task: read (and check) splits, tokenize once, batch."""

from __future__ import annotations

import dataclasses
import inspect
import json
import random
import typing
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, DistributedSampler

from promptscale.data.encoding import Collator, TaskEncoder, check_template, label_words
from promptscale.data.example import Example
from promptscale.data.readers import READERS
from promptscale.errors import ConfigError, DataError
from promptscale.families import family
from promptscale.models import cache_root, fingerprint


def _hub_export(task, split: str) -> Path:
    """Export a hub split (parquet repo) into the on-disk format of the task's reader (jsonl, or
    CoNLL columns for tagging), class labels as their names, so it is checked like a local file."""
    import datasets

    if not task.hub.path:
        raise ConfigError(
            f"task {task.name}: set data.dir (or PROMPTSCALE_DATA_DIR); it has no hub copy in its reader's layout"
        )
    hub_split = task.hub.splits.get(split, split)
    target = (
        cache_root()
        / "hub"
        / fingerprint([task.hub.path, task.hub.name, hub_split, "tab-separated"])
        / task.files[split]
    )
    if not target.exists():
        ds = datasets.load_dataset(task.hub.path, task.hub.name, split=hub_split)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        with tmp.open("w") as out:
            if task.kind == "tagging":
                names = ds.features["ner_tags"].feature.names
                for record in ds:
                    # tab-separated: a token may hold a space (read_conll splits a line with a tab at tabs)
                    out.writelines(f"{tok}\t{names[tag]}\n" for tok, tag in zip(record["tokens"], record["ner_tags"]))
                    out.write("\n")
            else:
                named = {k: f for k, f in ds.features.items() if isinstance(f, datasets.ClassLabel)}
                for record in ds:
                    if task.kind == "classification":
                        record.update({k: f.int2str(record[k]) for k, f in named.items() if record[k] >= 0})
                    out.write(json.dumps(record) + "\n")
        tmp.rename(target)
    return target


# a bucketed training epoch is sorted by length within chunks of this many batches
BUCKET_BATCHES = 50


def encoded_lengths(dataset) -> list[int]:
    """Positions each encoded example takes before padding: its input (tagging), or its prompt and
    its longest candidate (classification; candidates share one prompt)."""
    if "input_ids" in dataset.column_names:
        return [len(ids) for ids in dataset["input_ids"]]
    return [len(p) + max(map(len, c)) for p, c in zip(dataset["prompt_ids"], dataset["cand_ids"])]


# methods whose method.prompt_length positions go before the input
PREFIX_METHODS = ("prompt_tuning", "prefix_tuning", "ptuning_v2")


class SeededSampler(DistributedSampler):
    """Training order: epoch e is the (e+1)-th permutation drawn from a generator seeded with
    ``seed``, so the order follows ``seed`` alone and a resumed run sees the order an uninterrupted
    one does; ``resume_at=(epoch, n)`` starts that epoch after this process's first n samples.
    Lightning calls ``set_epoch`` before each epoch.

    With ``world`` processes (DDP) process ``rank`` takes every world-th sample of the permutation,
    padded from its start to a multiple of ``world`` as torch's DistributedSampler does (every
    process must run the same number of steps). It subclasses DistributedSampler so that Lightning
    uses it as it is: Lightning's DistributedSamplerWrapper re-shuffles a custom sampler and indexes
    the samples it yields by its length, which breaks a resumed epoch (IndexError)."""

    def __init__(
        self,
        size: int,
        seed: int,
        resume_at: tuple[int, int] | None = None,
        rank: int = 0,
        world: int = 1,
        buckets: tuple[list[int], int] | None = None,
    ):
        super().__init__(range(size), num_replicas=world, rank=rank, shuffle=True, seed=seed)
        self.size, self.resume_at = size, resume_at
        # (length of each sample, samples per global batch): length-bucketed batches
        self.buckets = buckets

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(epoch):
            torch.randperm(self.size, generator=generator)
        order = torch.randperm(self.size, generator=generator).tolist()
        if self.buckets is None:
            return order
        # chunks of BUCKET_BATCHES global batches: sorted by length within a chunk, the chunk's
        # batches then shuffled, all from the same seeded generator (a resumed run sees this order)
        lengths, batch = self.buckets
        bucketed = []
        for start in range(0, len(order), batch * BUCKET_BATCHES):
            chunk = sorted(order[start : start + batch * BUCKET_BATCHES], key=lambda i: -lengths[i])
            batches = [chunk[i : i + batch] for i in range(0, len(chunk), batch)]
            for b in torch.randperm(len(batches), generator=generator).tolist():
                bucketed.extend(batches[b])
        return bucketed

    def __iter__(self):
        start = 0
        if self.resume_at is not None:
            epoch, seen = self.resume_at
            self.resume_at = None
            start = seen if epoch == self.epoch else 0
        order = self.order(self.epoch)
        order += order[: self.total_size - len(order)]
        yield from order[self.rank : self.total_size : self.num_replicas][start:]

    # __len__ stays the whole epoch's share (DistributedSampler's num_samples), also when resuming:
    # Lightning counts a restarted epoch's batches from where it stopped (its fetcher adds the
    # batches already done), so the length it expects is the full one.


class ShardSampler(DistributedSampler):
    """Evaluation order: longest example first (``lengths``), so that a batch pads to the length
    of similar examples (as lm-eval sorts its requests; the longest batch also comes first, so an
    out-of-memory shows at once). Predictions are kept by example index, so the order changes no
    result beyond float rounding. With ``world`` processes, process ``rank`` takes every world-th
    example of that order and nothing is padded (torch's DistributedSampler repeats examples to
    even out the shards, so they would be counted twice). The metrics (torchmetrics) sum their
    states over the processes, so the scores cover exactly the eval set."""

    def __init__(self, size: int, rank: int = 0, world: int = 1, lengths: list[int] | None = None):
        if size < world:
            raise DataError(f"the eval split has {size} examples, fewer than the {world} processes evaluating it")
        super().__init__(range(size), num_replicas=world, rank=rank, shuffle=False)
        self.size = size
        # stable sort: equal lengths keep file order
        self.order = sorted(range(size), key=lambda i: -lengths[i]) if lengths is not None else list(range(size))

    def __iter__(self):
        yield from self.order[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.num_replicas))


class TaskDataModule(L.LightningDataModule):
    def __init__(self, task, data, seed: int):
        super().__init__()
        self.task, self.data, self.seed = task, data, seed
        self.eval_split = data.eval_split or task.eval_split
        self.train_examples: list[Example] = []
        self.eval_examples: list[Example] = []
        # (epoch, samples of it already trained on): set by a resumed run before the train loader is built
        self.resume_at: tuple[int, int] | None = None

    def split_path(self, split: str) -> Path:
        if split not in self.task.files:
            raise ConfigError(f"task {self.task.name}: unknown split {split!r}, have {', '.join(self.task.files)}")
        if self.data.dir is None:
            return _hub_export(self.task, split)
        return Path(self.data.dir) / self.task.folder / self.task.files[split]

    def read_split(self, split: str) -> list[Example]:
        path = self.split_path(split)
        if not path.is_file():
            raise DataError(f"{path}: split file not found (task {self.task.name}, split {split})")
        labels = list(self.task.labels) or None
        examples = READERS[self.task.reader](path, labels, **self.task.reader_options)
        if not examples:
            raise DataError(f"{path}: split {split} has no records")
        if self.task.kind != "tagging":
            check_template(self.task, examples[0], str(path))  # template fields and task.truncate
        return examples

    def check_reader_options(self) -> None:
        """task.reader_options against the reader's keyword arguments and their types (one line)."""
        reader = READERS[self.task.reader]
        params = list(inspect.signature(reader).parameters)[2:]  # after (path, labels)
        hints = typing.get_type_hints(reader)
        for name, value in self.task.reader_options.items():
            if name not in params:
                raise ConfigError(
                    f"task.reader_options.{name}: reader {self.task.reader} has no such option"
                    f" (its options: {', '.join(params) or 'none'})"
                )
            kind = hints.get(name)
            if isinstance(kind, type) and not (isinstance(value, kind) and not isinstance(value, bool)):
                raise ConfigError(
                    f"task.reader_options.{name}={value!r} should be {kind.__name__}, got {type(value).__name__}"
                )

    def check_labelled(self, examples: list[Example], split: str, use: str) -> None:
        """Training and scoring need gold answers: records without any are an error naming the file."""
        unlabelled = [e for e in examples if e.tags is None and e.label is None and not e.answers]
        if unlabelled:
            raise DataError(
                f"{self.split_path(split)}: {len(unlabelled)} of {len(examples)} records have no label (first:"
                f" record {unlabelled[0].guid}); split {split} needs labels to be {use}"
            )

    def _subsample(self, examples: list[Example], size, key: str, seed: int) -> list[Example]:
        if size is None:
            return examples
        if size > len(examples):
            raise ConfigError(f"data.{key}={size} is larger than the split ({len(examples)} records)")
        return random.Random(seed).sample(examples, size)

    def read(self) -> None:
        """Read and check both splits (no model needed, so bad data fails before loading one)."""
        if self.task.reader not in READERS:
            raise ConfigError(f"task.reader={self.task.reader!r} is not one of {', '.join(READERS)}")
        self.check_reader_options()
        train = self.read_split(self.task.train_split)
        evaluation = self.read_split(self.eval_split)
        if self.task.kind == "tagging" and not self.task.labels:  # generic CoNLL: tags of every split read
            tags = sorted({t for e in train + evaluation for t in e.tags} - {"O"})
            self.task.labels = ["O", *tags]
        if self.data.eval_limit is not None:
            # at most N records, as lm-eval's --limit: one cap serves a sweep over tasks of every size
            evaluation = evaluation[: self.data.eval_limit]
        self.train_examples = self._subsample(train, self.data.train_size, "train_size", self.seed)
        self.eval_examples = self._subsample(evaluation, self.data.eval_size, "eval_size", self.data.eval_seed)
        self.check_labelled(self.eval_examples, self.eval_split, "scored")

    def check_fit(self, cfg) -> None:
        """Prompt + demonstrations + answer slot against data.max_length and the model's positions
        (read from its config, no weights); ConfigError with the numbers. Only the tokenizer is
        loaded, and only where the count needs one (verbalizers, ICL demonstrations)."""
        from promptscale.models import load_tokenizer, max_positions

        fam, max_length, method = family(cfg.model.family), self.data.max_length, cfg.method
        # specials (Family.frame), counted without a tokenizer: a decoder's at most one <bos>
        n_special = fam.max_specials
        # a prompt token and (but on T5, whose answer is its target) an answer token, a candidate
        # keeping at most half the input (TaskEncoder.encode)
        least = n_special + 1 if self.task.kind == "tagging" else max(2, n_special + 1 + (not fam.seq2seq))
        if max_length < least:
            what = "a token" if self.task.kind == "tagging" else "a prompt token and an answer token"
            raise ConfigError(
                f"data.max_length={max_length} leaves no room for {what} ({fam.name} models need >= {least})"
            )
        positions = max_positions(cfg.model)
        # methods whose prompt_length positions come before the input (a soft prompt, per-layer prefixes)
        extra = {"method.prompt_length": method.prompt_length} if method.name in PREFIX_METHODS else {}
        if method.name == "cot" and not fam.seq2seq:  # the generated rationale and answer follow the prompt
            extra.update({"method.max_new_tokens": method.max_new_tokens, "method.answer_tokens": method.answer_tokens})
        self._check_positions(cfg, positions, extra)
        if method.name not in ("icl", "cot"):  # the methods that train (ICL picks labelled demonstrations)
            self.check_labelled(self.train_examples, self.task.train_split, "trained on")
        tokenizer = None
        if self.task.kind == "classification" and method.head == "lm":
            tokenizer = load_tokenizer(cfg.model)
            cap = max_length // 2
            words = [w for label in self.task.labels for w in label_words(self.task.verbalizer[label])]
            kept = {tuple(tokenizer(" " + w, add_special_tokens=False)["input_ids"][:cap]) for w in words}
            if len(kept) < len(words):
                raise ConfigError(
                    f"data.max_length={max_length}: the answer slot keeps {cap} token(s) of each verbalizer,"
                    f" too few to tell {words} apart; raise data.max_length"
                )
        if method.name == "icl" and method.shots and positions is not None:
            from promptscale.methods.icl.model import demonstration_text, pick_demonstrations

            encoder = TaskEncoder(self.task, tokenizer or load_tokenizer(cfg.model), fam.name, max_length)
            demos = pick_demonstrations(self.train_examples, method.shots, method.selection, self.seed)
            extra["method.shots"] = len(encoder.ids(demonstration_text(encoder, demos)))
            self._check_positions(cfg, positions, extra)

    def _check_positions(self, cfg, positions: int | None, extra: dict[str, int]) -> None:
        need = self.data.max_length + sum(extra.values())
        if positions is not None and need > positions:
            parts = "".join(
                f" + {n} ({'demonstrations' if what == 'method.shots' else what})" for what, n in extra.items()
            )
            raise ConfigError(
                f"data.max_length={self.data.max_length}{parts} = {need} positions, more than the {positions}"
                f" of model {cfg.model.name}; lower data.max_length{' or ' + ' or '.join(extra) if extra else ''}"
            )

    def attach(self, tokenizer, family: str, head: str) -> None:
        self.tokenizer, self.family, self.head = tokenizer, family, head
        self.encoder = TaskEncoder(self.task, tokenizer, family, self.data.max_length, self.data.truncation_side)

    def _encode(self, examples: list[Example]):
        """Tokenize through `datasets`, cached on disk under a fingerprint of everything that
        decides the ids, so a later run with the same inputs reuses the arrow file."""
        import datasets

        key = fingerprint(
            [
                [dataclasses.asdict(e) for e in examples],
                OmegaConf.to_container(self.task),
                type(self.tokenizer).__name__,
                self.tokenizer.name_or_path,
                len(self.tokenizer),
                self.family,
                [self.encoder.prefix, self.encoder.suffix],
                self.data.max_length,
                self.data.truncation_side,
            ]
        )
        cache = Path(self.data.cache_dir) if self.data.cache_dir else cache_root() / "tokenized"
        cache.mkdir(parents=True, exist_ok=True)
        rows = datasets.Dataset.from_dict({"i": list(range(len(examples)))})
        return rows.map(
            lambda row: self.encoder.encode(examples[row["i"]], row["i"]),
            remove_columns=["i"],
            cache_file_name=str(cache / f"{key}.arrow"),
            load_from_cache_file=True,
            new_fingerprint=key,
            desc=f"tokenizing {self.task.name}",
        )

    def setup(self, stage: str | None = None) -> None:
        if not hasattr(self, "train_set"):
            self.train_set = self._encode(self.train_examples)
            self.eval_set = self._encode(self.eval_examples)

    def collator(self, examples: list[Example]) -> Collator:
        return Collator(self.encoder, self.head, examples)

    def _loader(self, dataset, examples, batch_size: int, shuffle: bool) -> DataLoader:
        trainer = self.trainer  # None outside a Trainer: one process
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if shuffle:
            buckets = (encoded_lengths(dataset), batch_size * world) if self.data.bucket_by_length else None
            sampler = SeededSampler(len(dataset), self.seed, self.resume_at, rank, world, buckets)
        else:
            sampler = ShardSampler(len(dataset), rank, world, encoded_lengths(dataset))
        return DataLoader(
            dataset.with_format(None),
            batch_size=batch_size,
            sampler=sampler,
            # its own generator: starting an iterator never draws from the global RNG (dropout)
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=self.collator(examples),
            num_workers=self.data.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.train_examples, self.data.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_set, self.eval_examples, self.data.eval_batch_size, shuffle=False)
