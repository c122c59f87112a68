"""alpo: train expressive subtitle-translation LLMs with ALPO and translate subtitle files.

The data flow follows the command line: `align` (raw subtitle tracks -> aligned cue pairs),
then `prepare`, `train`, `translate` and `eval`.
"""

from alpo._core import __version__
from alpo.align import (
    ALIGNED_SCHEMA,
    align,
    align_report,
    align_to_parquet,
    read_subtitles,
    read_subtitles_info,
)
from alpo.exceptions import AlpoError, ConfigError, EncodingError, InputError, ParseError
from alpo.prepare import PrepareOptions, prepare

__all__ = [
    "ALIGNED_SCHEMA",
    "AlpoError",
    "ConfigError",
    "EncodingError",
    "InputError",
    "PrepareOptions",
    "ParseError",
    "__version__",
    "align",
    "align_report",
    "align_to_parquet",
    "prepare",
    "read_subtitles",
    "read_subtitles_info",
]
