"""Type stubs of the Rust extension (crates/alpo-py), checked by mypy's stubtest."""

from collections.abc import Sequence
from os import PathLike
from typing import Any, final

__all__ = [
    "AlpoError",
    "Aligner",
    "ArrowTable",
    "ConfigError",
    "EncodingError",
    "InputError",
    "ParseError",
    "build_pairs",
    "clean_texts",
    "distinct_candidates",
    "lang",
    "nearest",
    "prepare_windows",
    "read_subtitles",
    "__version__",
]
__version__: str

class AlpoError(Exception): ...
class InputError(AlpoError): ...
class EncodingError(AlpoError): ...
class ParseError(AlpoError): ...
class ConfigError(AlpoError): ...

@final
class ArrowTable:
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> Any: ...
    def __len__(self) -> int: ...

@final
class Aligner:
    def __new__(
        cls,
        paths: Sequence[str | PathLike[str]],
        pair: tuple[str, str] | None = None,
        max_gap: float = 0.7,
        sync: bool = True,
        mode: str = "nearest",
        keep_top: bool = False,
        min_overlap: float = 0.3,
        threads: int | None = None,
        chunk_mb: int = 64,
    ) -> Aligner: ...
    def next_batch(self) -> ArrowTable | None: ...
    def empty(self) -> ArrowTable: ...
    def report_json(self) -> str: ...
    @property
    def episodes(self) -> int: ...
    @property
    def bytes_total(self) -> int: ...
    @property
    def bytes_done(self) -> int: ...

def lang(tag: str) -> str: ...
def clean_texts(texts: list[str]) -> list[str]: ...
def read_subtitles(
    path: str | PathLike[str],
    lang: str | None = None,
    clean: bool = True,
    keep_top: bool = True,
) -> tuple[ArrowTable, str, str, tuple[int, str] | None]: ...
def nearest(src: Sequence[int], tgt: Sequence[int], max_gap_ms: int = 700) -> list[int | None]: ...
def distinct_candidates(frame: object) -> list[bool]: ...
def build_pairs(
    frame: object,
    min_candidates: int = 3,
    min_spread: float = 5.0,
    beta0: float = 1.0,
    top_chosen: int = 3,
    rejected_rank: int = 3,
    seed: int = 1024,
    gate: bool = True,
    importance: bool = True,
    dynamic_beta: bool = True,
    beta: float = 0.5,
) -> ArrowTable: ...
def prepare_windows(
    frame: object, core_lines: int = 25, context_lines: int = 5, min_lines: int = 10
) -> tuple[ArrowTable, str]: ...
