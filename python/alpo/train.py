"""`alpo train`: the training stages in order, each resumable, recorded in a manifest.

`workdir/manifest.json` holds, per stage, its status (`running`, `done`, `failed`), its seconds
and the fingerprints of its inputs; a finished stage whose inputs are unchanged is skipped. The
resolved configuration and the base model are recorded too. Stages: `sft`, `sample`, `pairs`,
`ref`, `alpo`. Training stages (`sft`, `alpo`) run in every process of a launched job; the
others run in rank 0 only.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from alpo import models
from alpo.align import parse_pair, write_json_atomic
from alpo.config import TrainConfig
from alpo.exceptions import ConfigError, InputError
from alpo.prepare import file_digest

__all__ = ["STAGES", "default_paths", "digest_json", "folder_stamp", "stage_inputs", "train"]

#: What each stage writes under the workdir.
OUTPUTS = {
    "sft": ("sft",),
    "sample": ("candidates.parquet", "scores.parquet"),
    "pairs": ("records.parquet",),
    "ref": ("records.parquet",),
    "alpo": ("alpo",),
}
#: Stages that train in DeepSpeed (every process of a launched job takes part).
TRAINING_STAGES = ("sft", "alpo")
#: Stages in the order they run.
STAGES: tuple[str, ...] = ("sft", "sample", "pairs", "ref", "alpo")


def default_paths(pair: str, data: Path | None, workdir: Path | None) -> tuple[Path, Path]:
    """`--data` defaults to `runs/{pair}/data` (the prepare output), `--workdir` to
    `runs/{pair}`."""
    return data or Path("runs") / pair / "data", workdir or Path("runs") / pair


def stage_inputs(stage: str, config: TrainConfig, data: Path, work: Path) -> dict[str, Any]:
    """Fingerprints of what a stage's result depends on."""
    if stage == "sft":
        return {
            "sft.parquet": _digest(data / "sft.parquet"),
            "prepare_options": digest_json(_prepare_options(data)),
            "config": digest_json(
                {
                    "model": asdict(config.model),
                    "sft": asdict(config.sft),
                    "deepspeed": asdict(config.deepspeed),
                }
            ),
        }
    if stage == "sample":
        return {
            "pool.parquet": _digest(data / "pool.parquet"),
            "prepare_options": digest_json(_prepare_options(data)),
            "policy": config.sample.model or folder_stamp(work / "sft"),
            "config": digest_json(
                {
                    "sample": asdict(config.sample),
                    "judge": asdict(config.judge),
                    "model": asdict(config.model),
                }
            ),
        }
    if stage == "pairs":
        return {
            "candidates.parquet": _digest(work / "candidates.parquet"),
            "scores.parquet": _digest(work / "scores.parquet"),
            "pool.parquet": _digest(data / "pool.parquet"),
            "config": digest_json(asdict(config.alpo)),
        }
    if stage == "ref":
        # Not records.parquet itself: this stage rewrites it with the ref columns filled.
        return {
            "pairs": stage_inputs("pairs", config, data, work),
            "policy": config.sample.model or folder_stamp(work / "sft"),
            "model": digest_json(asdict(config.model)),
            "packing": config.alpo.packing,
        }
    if stage == "alpo":
        return {
            "records.parquet": _digest(work / "records.parquet"),
            "policy": config.sample.model or folder_stamp(work / "sft"),
            "config": digest_json(
                {
                    "model": asdict(config.model),
                    "alpo": asdict(config.alpo),
                    "deepspeed": asdict(config.deepspeed),
                }
            ),
        }
    raise ConfigError(f"unknown stage {stage!r}")


def _prepare_options(data: Path) -> dict[str, Any]:
    """What of prepare's manifest shapes the prompts (its options; not its timings)."""
    from alpo.sft import prepare_options

    return prepare_options(data)


def folder_stamp(folder: Path) -> str | None:
    """Identity of a model folder another stage wrote: its files' names, sizes and times."""
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return digest_json([(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files])


def train(
    pair: str,
    config: TrainConfig,
    *,
    data: Path | None = None,
    workdir: Path | None = None,
    stages: Sequence[str] | None = None,
    force: bool = False,
    on_log: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run `stages` (default: all) for `pair`; returns {stage: summary}. Call it in every
    process of a launched job; rank 0 alone writes the manifest."""
    src, tgt = parse_pair(pair) or ("", "")
    pair = f"{src}-{tgt}"
    data_dir, work = default_paths(pair, data, workdir)
    todo = list(stages or STAGES)
    for stage in todo:
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r} (stages: {', '.join(STAGES)})")
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: no such folder (run alpo prepare first)")
    if "sft" in todo:
        models.resolve(config.model.policy)  # a bad model name fails before anything is written
    main = int(os.environ.get("RANK", "0")) == 0
    manifest_path = work / "manifest.json"
    manifest = _read_manifest(manifest_path)
    manifest["base_model"] = config.model.policy
    manifest["config"] = config.to_dict()
    results: dict[str, Any] = {}
    for stage in (s for s in STAGES if s in todo):
        if stage not in TRAINING_STAGES and not main:
            continue  # sampling and judging run in rank 0 alone
        inputs = stage_inputs(stage, config, data_dir, work)
        record = manifest["stages"].get(stage, {})
        if (
            not force
            and record.get("status") == "done"
            and record.get("inputs") == inputs
            and all((work / o).exists() for o in OUTPUTS[stage])
        ):
            results[stage] = {"skipped": True, **record}
            continue
        started = time.perf_counter()
        manifest["stages"][stage] = {"status": "running", "inputs": inputs}
        if main:
            write_json_atomic(manifest_path, manifest)
        try:
            summary = _run_stage(stage, config, data_dir, work, pair, on_log, fresh=force)
        except BaseException:
            manifest["stages"][stage]["status"] = "failed"
            if main:
                write_json_atomic(manifest_path, manifest)
            raise
        manifest["stages"][stage] = {
            "status": "done",
            "seconds": round(time.perf_counter() - started, 3),
            "inputs": inputs,
            "summary": summary,  # e.g. the pairs stage's gate statistics
        }
        if main:
            write_json_atomic(manifest_path, manifest)
        results[stage] = summary
    return results


def _run_stage(
    stage: str,
    config: TrainConfig,
    data: Path,
    work: Path,
    pair: str,
    on_log: Callable[[str, dict[str, Any]], None] | None,
    fresh: bool,
) -> dict[str, Any]:
    if stage == "sft":
        from alpo.sft import run_sft

        def log(metrics: dict[str, Any]) -> None:
            if on_log is not None:
                on_log(stage, metrics)

        return run_sft(config, data, work, pair, on_log=log, fresh=fresh)
    if stage == "sample":
        return _run_sample(config, data, work, pair, on_log, fresh=fresh)
    if stage == "pairs":
        return _run_pairs(config, data, work, pair)
    if stage == "ref":
        return _run_ref(config, work, fresh)
    if stage == "alpo":
        from alpo.alpo_train import run_alpo

        def log_alpo(metrics: dict[str, Any]) -> None:
            if on_log is not None:
                on_log(stage, metrics)

        policy = _policy(config, work)
        if not Path(policy).is_dir() and not config.sample.model:
            raise InputError(f"{policy}: no SFT model (run the sft stage first)")
        return run_alpo(config, work, policy, on_log=log_alpo, fresh=fresh)
    raise ConfigError(f"unknown stage {stage!r}")


def _policy(config: TrainConfig, work: Path) -> str:
    """The model the preference stages start from: the SFT output, unless sample.model names
    another."""
    return config.sample.model or str(work / "sft")


def _run_ref(config: TrainConfig, work: Path, fresh: bool) -> dict[str, Any]:
    """Reference log-probs of every record's chosen and rejected continuation, with the model
    training starts from (the SFT output) in the training dtype; done in shards of records, so a
    killed run resumes, then written into records.parquet."""
    import shutil

    import polars as pl
    import torch

    from alpo.logprobs import record_logps
    from alpo.prepare import read_windows, write_parquet_atomic

    started = time.perf_counter()
    path = work / "records.parquet"
    records = read_windows(path, ("prompt_ids", "chosen_ids", "rejected_ids"))
    policy = _policy(config, work)
    packing = config.alpo.packing
    stamp = digest_json(
        [_digest(path), policy, folder_stamp(Path(policy)), asdict(config.model), packing]
    )
    shards = work / "ref"
    if fresh or (shards / "stamp").is_file() and (shards / "stamp").read_text() != stamp:
        shutil.rmtree(shards, ignore_errors=True)
    shards.mkdir(parents=True, exist_ok=True)
    (shards / "stamp").write_text(stamp)
    model = models.load_model(
        policy, dtype=config.model.dtype, trust_remote_code=config.model.trust_remote_code
    )
    model.eval()
    tokenizer = models.load_tokenizer(policy, config.model.trust_remote_code)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    chunk, batch = 256, config.alpo.ref_batch
    for start in range(0, records.height, chunk):
        shard = shards / f"rows-{start:09d}.parquet"
        if shard.is_file():
            continue
        part = records.slice(start, chunk)
        chosen: list[float] = []
        rejected: list[float] = []
        with torch.no_grad():
            for i in range(0, part.height, batch):
                rows = part.slice(i, batch)
                c, r = record_logps(
                    model,
                    rows["prompt_ids"].to_list(),
                    rows["chosen_ids"].to_list(),
                    rows["rejected_ids"].to_list(),
                    packing=packing,
                    pad_id=pad,
                )
                chosen += c.tolist()
                rejected += r.tolist()
        frame = pl.DataFrame(
            {"ref_chosen_logp": chosen, "ref_rejected_logp": rejected},
            schema={"ref_chosen_logp": pl.Float64, "ref_rejected_logp": pl.Float64},
        )
        write_parquet_atomic(frame.lazy(), shard)
    parts = [
        pl.read_parquet(shards / f"rows-{s:09d}.parquet") for s in range(0, records.height, chunk)
    ]
    if parts:
        refs = pl.concat(parts)
        records = records.with_columns(refs["ref_chosen_logp"], refs["ref_rejected_logp"])
    write_parquet_atomic(records.lazy(), path)
    return {
        "records": records.height,
        "out": str(path),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _run_pairs(config: TrainConfig, data: Path, work: Path, pair: str) -> dict[str, Any]:
    import polars as pl

    from alpo.preference import (
        build_outcome_records,
        build_pairs,
        build_records,
        gate_statistics,
    )
    from alpo.prepare import read_windows, write_parquet_atomic
    from alpo.sampling import load_windows, reference_piece
    from alpo.sft import prepare_options

    a = config.alpo
    candidates = read_windows(
        work / "candidates.parquet", ("window_id", "segment", "candidate", "text", "token_ids")
    )
    scores = read_windows(work / "scores.parquet", ("window_id", "segment", "candidate", "score"))
    table = scores.join(
        candidates.select("window_id", "segment", "candidate", "text"),
        on=["window_id", "segment", "candidate"],
    )
    # The baselines use the same pairs rule without the adaptive parts (method.md 8.4).
    adaptive = a.method == "alpo"
    pairs = build_pairs(
        table,
        min_candidates=a.min_candidates,
        min_spread=a.min_spread,
        beta0=a.beta0,
        top_chosen=a.top_chosen,
        rejected_rank=a.rejected_rank,
        seed=a.seed,
        gate=a.gate and adaptive,
        importance=a.importance and adaptive,
        dynamic_beta=a.dynamic_beta and adaptive,
        beta=a.beta,
    )
    policy = _policy(config, work)
    tokenizer = models.load_tokenizer(policy, config.model.trust_remote_code)
    windows = load_windows(data / "pool.parquet", pair, tokenizer, prepare_options(data))
    scored = candidates.join(
        scores.select("window_id", "segment", "candidate", "score"),
        on=["window_id", "segment", "candidate"],
    )
    reference = partial(reference_piece, tokenizer)
    if a.method == "outcome_dpo":
        records = build_outcome_records(windows, scored, pairs, reference, beta=a.beta, seed=a.seed)
    else:
        records = build_records(
            windows,
            scored,
            pairs,
            reference,
            stages=a.prefix_stages,
            lambda_start=a.lambda_start,
            lambda_end=a.lambda_end,
            prefix_mixing=a.prefix_mixing and adaptive,
            schedule=a.schedule,
            seed=a.seed,
        )
    write_parquet_atomic(records.lazy(), work / "records.parquet")
    stats = gate_statistics(pairs, scores, a.min_candidates, a.min_spread)
    return {
        **stats,
        "method": a.method,
        "records": records.height,
        "out": str(work / "records.parquet"),
        "windows_with_records": records["window_id"].n_unique() if records.height else 0,
        "stages": int(pl.Series(records["stage"]).n_unique()) if records.height else 0,
    }


def _run_sample(
    config: TrainConfig,
    data: Path,
    work: Path,
    pair: str,
    on_log: Callable[[str, dict[str, Any]], None] | None,
    fresh: bool,
) -> dict[str, Any]:
    from alpo.generation import make_backend
    from alpo.sampling import SampleSettings, load_windows, run_sample
    from alpo.sft import prepare_options

    sample, judge = config.sample, config.judge
    policy_name = sample.model or str(work / "sft")
    if not sample.model and not (work / "sft").is_dir():
        raise InputError(f"{work / 'sft'}: no SFT model (run the sft stage first)")
    common: dict[str, Any] = {
        "dtype": config.model.dtype,
        "trust_remote_code": config.model.trust_remote_code,
        "max_batch": sample.max_batch,
        "vllm": asdict(config.vllm),
    }
    same = (judge.model, judge.backend, judge.base_url) == (
        policy_name,
        sample.backend,
        sample.base_url,
    )
    policy = make_backend(
        sample.backend,
        policy_name,
        base_url=sample.base_url,
        api_key_env=sample.api_key_env,
        concurrency=sample.concurrency,
        timeout=sample.timeout,
        thinking_off=same and judge.thinking_off,  # the policy also judges
        **common,
    )
    judge_backend = (
        policy
        if same
        else make_backend(
            judge.backend,
            judge.model,
            base_url=judge.base_url,
            api_key_env=judge.api_key_env,
            concurrency=judge.concurrency,
            timeout=judge.timeout,
            tokenizer=False,
            thinking_off=judge.thinking_off,
            **common,
        )
    )
    tokenizer = models.load_tokenizer(policy_name, config.model.trust_remote_code)
    windows = load_windows(data / "pool.parquet", pair, tokenizer, prepare_options(data))
    settings = SampleSettings(
        mode=sample.mode,
        k=sample.k,
        temperature=sample.temperature,
        top_k=sample.top_k,
        top_p=sample.top_p,
        max_new_tokens=sample.max_new_tokens,
        votes=judge.votes,
        judge_retries=judge.retries,
        judge_temperature=judge.temperature,
        judge_language=judge.language,
        judge_max_new_tokens=judge.max_new_tokens,
        context_lines=judge.context_lines,
        seed=sample.seed,
    )

    def log(metrics: dict[str, Any]) -> None:
        if on_log is not None:
            on_log(
                "sample",
                {"step": metrics["round"] + 1, "total_steps": metrics["rounds"], **metrics},
            )

    summary = run_sample(
        windows,
        policy,
        judge_backend,
        tokenizer,
        pair,
        settings,
        work,
        on_round=log,
        fresh=fresh,
        identity={
            "policy": sample.model or folder_stamp(work / "sft"),
            "judge": asdict(judge),
            "model": asdict(config.model),
        },
    )
    return {**summary, "out": str(work / "candidates.parquet")}


def _read_manifest(path: Path) -> dict[str, Any]:
    if path.is_file():
        try:
            manifest = json.loads(path.read_text())
            manifest.setdefault("stages", {})
            return dict(manifest)
        except (OSError, ValueError):
            raise InputError(f"{path}: not a readable manifest") from None
    return {"stages": {}}


def _digest(path: Path) -> str | None:
    return file_digest(path) if path.is_file() else None


def digest_json(value: Any) -> str:
    """SHA-256 of `value` as JSON with sorted keys: a fingerprint of settings or inputs."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
