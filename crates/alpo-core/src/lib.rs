//! alpo-core: the subtitle engine of alpo, in plain Rust.
//!
//! Data flow of `alpo align`: [`encoding`] decodes bytes, [`formats`] parses SRT/WebVTT/ASS/
//! MicroDVD, [`clean`] turns cues into plain text, [`names`] pairs files of one episode across
//! languages, [`sync`] corrects offset and drift, [`align`] links cues, [`corpus`] runs it all
//! over a corpus in parallel chunks and [`batch`] hands the rows over as Arrow.
//!
//! `alpo prepare`: [`windows`] cuts prompt windows of whole segments out of the aligned rows.

pub mod align;
pub mod batch;
pub mod candidates;
pub mod clean;
pub mod corpus;
pub mod encoding;
pub mod error;
pub mod formats;
pub mod names;
pub mod preference;
pub mod report;
pub mod sync;
pub mod windows;

pub use error::{Error, Result};
