"""Benchmark the alpo stage's training speed on CPU: packed records against padded rows and TRL.

Three ways to train on the same preference records, in records per second of training loop
(model loading, reference log-probs and TRL's set-up left out):

- packed: the alpo stage's default (`packing = "chain"`): a micro-batch is a window's gated
  records of one prefix stage, and `alpo.logprobs.record_logps` computes them as one sequence
  (the trunk, i.e. the longest prompt, with a chosen and a rejected branch per record).
- plain: the same records and optimizer steps with `packing = "plain"`: every (prompt, answer)
  is its own right-padded row. `chunk` records go through the model at a time (gradient
  accumulation inside the step, as `alpo.micro_batch` < `alpo.global_batch` does), so that the
  padded batch fits in memory; the step's loss is the same.
- trl: TRL's `DPOTrainer` fed the same token ids one record per micro-batch
  (`per_device_train_batch_size=1`, gradient accumulation over the records of one step), with
  the reference log-probs that TRL precomputes itself (`precompute_ref_log_probs=True`, before
  the timed loop). TRL's text preprocessing is skipped: the records are token ids already.

packed and plain run a plain loop around what `alpo.alpo_train.run_alpo` does per micro-batch
(`record_logps`, `alpo.loss.alpo_loss` with the `step` normalizer, backward, clipping at 1.0,
`torch.optim.AdamW`), without the DeepSpeed engine (which cost nothing measurable on CPU in
`sft_speed.py`). Every run starts from the same weights, and packed and plain must give the same
loss at every step (within 1e-4; checked and printed).

Records are synthetic and paper-shaped: windows of 25 core + 10 context lines, 80 % of the core
segments gated (20 records per window and stage), a window prompt of `prompt` random tokens,
answers of 10-40 random tokens, prefix stages as `alpo.preference.build_records` makes them
(record i's prompt = the window prompt + the 5 leading context lines + the pieces of the
segments before i; lambda 0.2-0.6). On the 135M model a plain step of 20 records is about 40k
tokens (minutes on 2 cores), so there plain and trl take every `stride`-th record of a chain
(still a chain, prompts of about average length) while packed is timed on the whole chain; a
packed run on plain's records gives the equal-loss check and a same-records ratio.

Models: `tiny` (the test suite's random Qwen2: 2 layers, hidden 64) and `embedded`
(SmolLM2-135M-Instruct). The paths run interleaved (packed, plain, trl, packed, ...) `--runs`
times, each after waiting (up to `--idle-wait` s) for other processes to go quiet; medians are
printed and everything goes to `bench/out/train_speed.json` (`--quick`: `...-quick.json`).

    pip install trl                      # optional; without it the trl line says n/a
    python bench/train_speed.py          # both models, 3 runs each
    python bench/train_speed.py --quick  # small shapes, 1 run: a smoke test
    python bench/train_speed.py --models tiny --runs 5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from align_speed import cpu_ticks, machine, wait_idle  # noqa: E402

from alpo import models  # noqa: E402
from alpo.logprobs import chains, record_logps  # noqa: E402
from alpo.loss import alpo_loss  # noqa: E402

CORE, CONTEXT, GATED, ANSWER = 25, 10, 0.8, (10, 40)
LAMBDAS = (0.2, 0.3, 0.4, 0.5, 0.6)  # the five prefix stages
TRL_BETA = 0.1  # DPO's constant beta in TRL (the alpo paths use each record's own)


@dataclass
class Shape:
    """How much each path runs per repetition."""

    prompt: tuple[int, int]  # window prompt tokens, drawn uniformly
    chains: int  # window stages (micro-batches of about 20 records) packed trains on
    plain_chains: int  # of those, how many plain and trl train on
    stride: int  # plain and trl take every stride-th record of a chain
    chunk: int  # plain: records per forward pass
    trl_records: int  # records trl trains on (the first of plain's)


SHAPES = {
    "tiny": Shape((500, 2000), chains=3, plain_chains=3, stride=1, chunk=20, trl_records=20),
    "embedded": Shape((500, 600), chains=1, plain_chains=1, stride=10, chunk=1, trl_records=2),
}
QUICK = {  # a smoke test of every path
    "tiny": Shape((500, 700), chains=2, plain_chains=1, stride=2, chunk=5, trl_records=4),
    "embedded": Shape((100, 120), chains=1, plain_chains=1, stride=10, chunk=1, trl_records=2),
}


@dataclass
class Batch:
    """Consecutive training records (one optimizer step) with their reference log-probs."""

    prompts: list[list[int]] = field(default_factory=list)
    chosen: list[list[int]] = field(default_factory=list)
    rejected: list[list[int]] = field(default_factory=list)
    weight: list[float] = field(default_factory=list)
    beta: list[float] = field(default_factory=list)
    ref_chosen: list[float] = field(default_factory=list)
    ref_rejected: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompts)

    def part(self, start: int | None, stop: int | None, step: int = 1) -> Batch:
        return Batch(**{k: v[start:stop:step] for k, v in vars(self).items()})

    def every(self, stride: int) -> Batch:
        """Every stride-th record from the middle of the first stride (prompts of average
        length); their prompts still extend one another."""
        return self.part(stride // 2, None, stride)


@dataclass
class Run:
    seconds: float  # wall
    cpu: float  # CPU seconds of this process (all its threads)
    records: int
    losses: list[float]  # per optimizer step
    logps: list[float] = field(default_factory=list)  # policy log-probs, chosen and rejected
    others: float = 0.0  # CPU seconds the rest of the machine used meanwhile

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def cpu_rate(self) -> float:
        return self.records / self.cpu


def make_chain(rng: random.Random, vocab: int, prompt: tuple[int, int]) -> Batch:
    """One window's gated records of one prefix stage, as `build_records` makes them."""

    def piece() -> list[int]:
        return [rng.randrange(vocab) for _ in range(rng.randint(*ANSWER))]

    window = [rng.randrange(vocab) for _ in range(rng.randint(*prompt))]
    prefix = [t for _ in range(CONTEXT // 2) for t in piece()]  # leading context: references
    gated = set(rng.sample(range(CORE), round(GATED * CORE)))
    lam = rng.choice(LAMBDAS)
    out = Batch()
    for seg in range(CORE):
        candidates = [piece() for _ in range(4)]
        if seg in gated:
            out.prompts.append(window + prefix)
            out.chosen.append(candidates[0])
            out.rejected.append(candidates[1])
            out.weight.append(rng.uniform(0.2, 1.0))
            out.beta.append(rng.uniform(0.1, 1.0))
        prefix += candidates[0] if rng.random() < lam else rng.choice(candidates)
    return out


def fill_reference(model: Any, batches: list[Batch], pad_id: int) -> None:
    """The ref stage: log-probs of every record under the starting weights."""
    import torch

    with torch.no_grad():
        for b in batches:
            c, r = record_logps(model, b.prompts, b.chosen, b.rejected, pad_id=pad_id)
            b.ref_chosen, b.ref_rejected = c.tolist(), r.tolist()


def tokens_fed(b: Batch, path: str, chunk: int) -> int:
    """Tokens (padding included) the path puts through the model for batch b."""
    if path == "packed":
        rows = [
            max(len(b.prompts[i]) for i in g)
            + sum(len(b.chosen[i]) + len(b.rejected[i]) for i in g)
            for g in chains(b.prompts)
        ]
        return len(rows) * max(rows)
    if path == "trl":
        chunk = 1  # one record per forward; its chosen and rejected rows are padded alike
    total = 0
    for lo in range(0, len(b), chunk):
        ids = range(lo, min(lo + chunk, len(b)))
        width = max(len(b.prompts[i]) + max(len(b.chosen[i]), len(b.rejected[i])) for i in ids)
        total += 2 * len(ids) * width
    return total


def timed(idle_wait: float, fn: Any, *args: Any) -> Run:
    """fn(*args) -> Run, after waiting up to `idle_wait` s for other processes to use under 0.2
    CPU, with the CPU seconds other processes took during it."""
    if idle_wait > 0:
        wait_idle(idle_wait)
    busy = cpu_ticks()[0]
    run = fn(*args)
    run.others = max(0.0, (cpu_ticks()[0] - busy) / os.sysconf("SC_CLK_TCK") - run.cpu)
    return run


def train(
    model: Any, start: dict, batches: list[Batch], packing: str, chunk: int, lr: float, pad_id: int
) -> Run:
    """One optimizer step per batch, from the weights `start`; the loss of every step."""
    import torch

    model.load_state_dict(start)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0)

    def col(values: list[float]) -> Any:
        return torch.tensor(values, dtype=torch.float64)

    losses: list[float] = []
    logps: list[float] = []
    began, cpu = time.perf_counter(), time.process_time()
    for b in batches:
        total, step_loss = sum(b.weight), 0.0
        for lo in range(0, len(b), chunk):
            part = b.part(lo, lo + chunk)
            pc, pr = record_logps(
                model, part.prompts, part.chosen, part.rejected, packing=packing, pad_id=pad_id
            )
            loss = alpo_loss(
                pc,
                pr,
                col(part.ref_chosen),
                col(part.ref_rejected),
                col(part.beta),
                col(part.weight),
                weight_total=total,
            )
            loss.backward()
            step_loss += float(loss.detach())
            logps += [x for pair in zip(pc.tolist(), pr.tolist(), strict=True) for x in pair]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    return Run(wall, cpu, sum(len(b) for b in batches), losses, logps)


def trl_version() -> str | None:
    try:
        import trl
    except ImportError:
        return None
    return str(trl.__version__)


def trl_dataset(records: Batch) -> Any:
    """The records' token ids as TRL's tokenized preference columns. Built once per model, so
    that TRL's reference pass is cached after the first run (same data, same weights)."""
    import datasets

    datasets.disable_progress_bars()
    columns = {"prompt_ids": records.prompts, "chosen_ids": records.chosen}
    return datasets.Dataset.from_dict(columns | {"rejected_ids": records.rejected})


def train_trl(
    model_name: str, data: Any, records: Batch, accumulation: int, lr: float, out: Path, idle: float
) -> dict:
    """TRL's DPOTrainer on the records' token ids (`data`), one record per micro-batch. Returns
    the Run and how far TRL's own reference log-probs are from alpo's (same pairs and model)."""
    from transformers import PrinterCallback, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class TokenIdDPOTrainer(DPOTrainer):
        # The records are token ids already: skip TRL's text preprocessing (prompt extraction,
        # an EOS appended to each answer, tokenization).
        def _prepare_dataset(self, dataset: Any, *args: Any, **kwargs: Any) -> Any:
            return dataset

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.losses: list[float] = []

        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            self.began = (time.perf_counter(), time.process_time())

        def on_train_end(self, *args: Any, **kwargs: Any) -> None:
            self.ended = (time.perf_counter(), time.process_time())

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    config = DPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=1,
        gradient_accumulation_steps=accumulation,
        max_steps=len(records) // accumulation,
        learning_rate=lr,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        beta=TRL_BETA,
        loss_type=["sigmoid"],
        max_length=None,
        precompute_ref_log_probs=True,
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=True,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    model = models.load_model(model_name, dtype="float32", device="cpu")
    clock = Clock()
    began = time.perf_counter()
    trainer = TokenIdDPOTrainer(
        model=model,
        args=config,
        train_dataset=data,
        processing_class=models.load_tokenizer(model_name),
        callbacks=[clock],
    )
    setup = time.perf_counter() - began
    trainer.remove_callback(PrinterCallback)  # it prints every step's metrics
    ref = trainer.train_dataset
    ref_diff = max(
        abs(a - b)
        for a, b in zip(
            list(ref["ref_chosen_logps"]) + list(ref["ref_rejected_logps"]),
            records.ref_chosen + records.ref_rejected,
            strict=True,
        )
    )
    if idle > 0:
        wait_idle(idle)
    busy, own = cpu_ticks()[0], time.process_time()
    trainer.train()
    machine_cpu = (cpu_ticks()[0] - busy) / os.sysconf("SC_CLK_TCK")
    others = max(0.0, machine_cpu - (time.process_time() - own))
    wall, cpu = (end - begin for end, begin in zip(clock.ended, clock.began, strict=True))
    run = Run(wall, cpu, config.max_steps * accumulation, clock.losses, others=others)
    return {"run": run, "setup_s": setup, "ref_max_abs_diff": ref_diff}


def load(name: str, folder: Path) -> tuple[str, Any, int]:
    """The model's name for `models.load_model`, the loaded model and its pad id."""
    if name == "tiny":
        from alpo.tiny_model import build_tiny_model

        name = str(build_tiny_model(folder / "tiny-model"))
    else:
        models.embedded_model_dir()  # convert once, outside the timings
    tokenizer = models.load_tokenizer(name)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return name, models.load_model(name, dtype="float32", device="cpu"), pad


def warm_up(model: Any, start: dict, batch: Batch, pad: int) -> None:
    """A short step of each alpo path, so that no timed run pays one-time costs."""
    short = batch.part(0, 2)
    short.prompts = [p[:64] for p in short.prompts]
    for packing in ("chain", "plain"):
        train(model, start, [short], packing, 2, 1e-5, pad)


def bench_model(
    name: str, shape: Shape, runs: int, lr: float, folder: Path, idle_wait: float
) -> dict:
    """Every path on one model, interleaved `runs` times; medians and the equal-loss check."""
    path, model, pad = load(name, folder)
    vocab = model.config.vocab_size
    rng = random.Random(7)
    packed_batches = [make_chain(rng, vocab, shape.prompt) for _ in range(shape.chains)]
    fill_reference(model, packed_batches, pad)
    plain_batches = [b.every(shape.stride) for b in packed_batches[: shape.plain_chains]]
    joined = Batch(**{k: sum((vars(b)[k] for b in plain_batches), []) for k in vars(Batch())})
    trl_batch = joined.part(0, shape.trl_records)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    warm_up(model, start, packed_batches[0], pad)
    trl = trl_version()
    data = trl_dataset(trl_batch) if trl else None
    times: dict[str, list[Run]] = {"packed": [], "plain": [], "trl": []}
    trl_info: dict[str, Any] = {}
    for _ in range(runs):
        times["packed"].append(
            timed(idle_wait, train, model, start, packed_batches, "chain", CORE, lr, pad)
        )
        times["plain"].append(
            timed(idle_wait, train, model, start, plain_batches, "plain", shape.chunk, lr, pad)
        )
        if trl:
            accumulation = min(len(plain_batches[0]), shape.trl_records)
            out = folder / f"trl-{name}"
            info = train_trl(path, data, trl_batch, accumulation, lr, out, idle_wait)
            times["trl"].append(info.pop("run"))
            trl_info = info | {"accumulation": accumulation}
    # packed on plain's own records: the equal-loss check and a same-records ratio
    if shape.stride == 1 and shape.plain_chains == shape.chains:
        check = times["packed"][0]
    else:
        check = timed(idle_wait, train, model, start, plain_batches, "chain", CORE, lr, pad)
    row = summarize(name, shape, times, check, packed_batches, plain_batches, trl_batch)
    return row | {"trl_version": trl, "trl": trl_info, "lr": lr}


def max_diff(a: list[float], runs: list[Run], key: str) -> float:
    """Largest |difference| between `a` and the `key` list of every run."""
    return max(abs(x - y) for r in runs for x, y in zip(a, getattr(r, key), strict=True))


def summarize(
    name: str,
    shape: Shape,
    times: dict[str, list[Run]],
    check: Run,
    packed_batches: list[Batch],
    plain_batches: list[Batch],
    trl_batch: Batch,
) -> dict:
    """Medians, ratios and the token saving (tokens per record as each path ran)."""

    def median(runs: list[Run], key: str) -> float | None:
        return statistics.median(getattr(r, key) for r in runs) if runs else None

    rate = {k: median(v, "rate") for k, v in times.items()}
    cpu_rate = {k: median(v, "cpu_rate") for k, v in times.items()}
    per_record = {
        "packed": sum(tokens_fed(b, "packed", 0) for b in packed_batches)
        / sum(len(b) for b in packed_batches),
        "plain": sum(tokens_fed(b, "plain", shape.chunk) for b in plain_batches)
        / sum(len(b) for b in plain_batches),
        "trl": tokens_fed(trl_batch, "trl", 1) / len(trl_batch),
        "packed_on_plain_records": sum(tokens_fed(b, "packed", 0) for b in plain_batches)
        / sum(len(b) for b in plain_batches),
    }
    theory = 1 - per_record["packed"] / per_record["plain"]
    realised = 1 - rate["plain"] / rate["packed"]
    prompts = [len(p) for b in packed_batches for p in b.prompts]
    return {
        "model": name,
        "shape": vars(shape),
        "records": {k: [r.records for r in v] for k, v in times.items()},
        "seconds": {k: [round(r.seconds, 3) for r in v] for k, v in times.items()},
        "cpu_seconds": {k: [round(r.cpu, 3) for r in v] for k, v in times.items()},
        "others_cpu_seconds": {k: [round(r.others, 1) for r in v] for k, v in times.items()},
        "records_per_s": {k: [r.rate for r in v] for k, v in times.items()},
        "median_records_per_s": rate,
        "median_records_per_cpu_s": cpu_rate,
        "ratio_packed_plain_cpu": cpu_rate["packed"] / cpu_rate["plain"],
        "packed_on_plain_records_per_s": check.rate,
        "ratio_packed_plain": rate["packed"] / rate["plain"],
        "ratio_packed_plain_same_records": check.rate / rate["plain"],
        "ratio_packed_trl": rate["packed"] / rate["trl"] if rate["trl"] else None,
        "tokens_per_record": per_record,
        "record_prompt_tokens": [min(prompts), round(statistics.mean(prompts)), max(prompts)],
        "theoretical_saving": theory,
        "realised_saving": realised,
        "saving_share": realised / theory,
        "loss_steps": len(check.losses),
        "loss_max_abs_diff": max_diff(check.losses, times["plain"], "losses"),
        "logp_max_abs_diff": max_diff(check.logps, times["plain"], "logps"),
        "losses_packed": check.losses,
        "losses_plain": times["plain"][0].losses,
        "losses_trl": times["trl"][0].losses if times["trl"] else None,
    }


def report(row: dict) -> None:
    s, t, rec = row["shape"], row["tokens_per_record"], row["records"]
    lo, mean, hi = row["record_prompt_tokens"]
    runs = len(rec["packed"])
    print(
        f"model: {row['model']}; windows of {CORE} core + {CONTEXT} context lines, "
        f"{round(GATED * CORE)} gated records per window stage (one micro-batch and optimizer "
        f"step), window prompts {s['prompt'][0]}-{s['prompt'][1]} tokens, record prompts "
        f"{lo}-{hi} (mean {mean}), answers {ANSWER[0]}-{ANSWER[1]}"
    )
    every = "every record" if s["stride"] == 1 else f"every {s['stride']}th record"
    print(
        f"  per run: packed {rec['packed'][0]} records ({s['chains']} window stages); plain "
        f"{rec['plain'][0]} ({every} of {s['plain_chains']} of them, {s['chunk']} per forward); "
        f"trl {rec['trl'][0] if rec['trl'] else 0} (batch 1, accumulation "
        f"{row['trl'].get('accumulation', '-')}); {runs} runs, medians"
    )
    rate = row["median_records_per_s"]
    for path in ("packed", "plain", "trl"):
        if rate[path] is None:
            print(f"{path}: n/a (trl is not installed: pip install trl)")
        else:
            print(f"{path}: {rate[path]:.3g} records/s")
    trl_ratio = f"{row['ratio_packed_trl']:.1f}x" if row["ratio_packed_trl"] else "n/a"
    print(
        f"packed/plain: {row['ratio_packed_plain']:.1f}x (per CPU-second "
        f"{row['ratio_packed_plain_cpu']:.1f}x; packed on plain's own records "
        f"{row['ratio_packed_plain_same_records']:.1f}x); packed/trl: {trl_ratio}"
    )
    print(
        f"tokens per record (padding included): packed {t['packed']:.0f}, plain "
        f"{t['plain']:.0f}, trl {t['trl']:.0f}; token saving: theoretical "
        f"{row['theoretical_saving']:.1%}, realised {row['realised_saving']:.1%}, "
        f"share {row['saving_share']:.1%}"
    )
    ok = "ok" if row["loss_max_abs_diff"] <= 1e-4 else "MISMATCH"
    print(
        f"equal loss: packed vs plain over {row['loss_steps']} step(s) x {runs} run(s), "
        f"max |diff| {row['loss_max_abs_diff']:.2e} ({ok}; policy log-probs max |diff| "
        f"{row['logp_max_abs_diff']:.1e})"
    )
    if row["trl"]:
        print(
            f"trl {row['trl_version']}: reference log-probs precomputed by TRL "
            f"({row['trl']['setup_s']:.0f} s set-up, untimed), max |diff| to alpo's "
            f"{row['trl']['ref_max_abs_diff']:.1e}"
        )
    others = {k: max(v) for k, v in row["others_cpu_seconds"].items() if v}
    print(f"  other processes' CPU seconds during a run (max): {others}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "embedded"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--quick", action="store_true", help="small shapes, 1 run: a smoke test")
    ap.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    ap.add_argument(
        "--idle-wait",
        type=float,
        default=60.0,
        help="before each timed run, wait up to this many seconds for other processes to use "
        "under 0.2 CPU (0: don't wait)",
    )
    args = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")  # TRL's reference pass
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    results: dict = {"machine": machine(), "models": {}}
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        for name in args.models:
            shape = (QUICK if args.quick else SHAPES)[name]
            runs = 1 if args.quick else args.runs
            row = bench_model(name, shape, runs, args.lr, Path(tmp), args.idle_wait)
            results["models"][name] = row
            report(row)
    name = "train_speed-quick.json" if args.quick else "train_speed.json"
    (out / name).write_text(json.dumps(results, indent=1))
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
