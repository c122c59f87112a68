"""alpo's exceptions. One hierarchy, declared in the Rust extension and mapped there from the
core's one error type; Python code raises the same classes.

    AlpoError
    ├── InputError      a file or folder cannot be read, or holds the wrong thing
    ├── EncodingError   a file's text encoding cannot be decoded
    ├── ParseError      a file's content cannot be parsed
    └── ConfigError     an option or configuration value is invalid
"""

from alpo._core import AlpoError, ConfigError, EncodingError, InputError, ParseError

__all__ = ["AlpoError", "ConfigError", "EncodingError", "InputError", "ParseError"]
