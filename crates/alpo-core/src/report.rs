//! What an alignment run did, file by file and episode by episode: the JSON report of
//! `alpo align --report`.

use crate::clean::CleanStats;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub file: String,
    pub reason: String,
}

/// A file that parsed only in part: its good cues are used.
#[derive(Debug, Clone, Serialize)]
pub struct Partial {
    pub file: String,
    pub line: u32,
    pub reason: String,
    pub bad_lines: u32,
}

/// A second file of the same episode and language, left out.
#[derive(Debug, Clone, Serialize)]
pub struct DuplicateFile {
    pub file: String,
    pub kept: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EpisodeReport {
    pub pair: String,
    pub title: String,
    pub episode: String,
    pub src_file: String,
    pub tgt_file: String,
    pub src_cues: u64,
    pub tgt_cues: u64,
    pub aligned: u64,
    pub unaligned: u64,
    pub aligned_share: f64,
    pub fragments: u64,
    /// Offset added to source times before aligning, in ms (0 when no correction was applied).
    pub offset_ms: f64,
    /// Speed ratio applied to source times (1 when no correction was applied).
    pub speed: f64,
    pub sync_applied: bool,
    /// Share of source cues aligned without correction, for comparison.
    pub aligned_share_unsynced: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PairTotals {
    pub episodes: u64,
    pub src_cues: u64,
    pub aligned: u64,
    pub aligned_share: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub files_found: u64,
    pub files_paired: u64,
    /// Files in a language outside `--pair`.
    pub files_ignored: u64,
    pub files_skipped: Vec<Skipped>,
    pub files_partial: Vec<Partial>,
    pub duplicate_files: Vec<DuplicateFile>,
    pub cues_src: u64,
    pub cues_tgt: u64,
    pub aligned: u64,
    pub unaligned: u64,
    /// Cues removed by cleaning, by reason, over every file read.
    pub removed: CleanStats,
    /// Rolling duplicates merged plus duplicate files left out.
    pub duplicates_removed: u64,
    /// Rows flagged `dup`: their text pair came earlier in the corpus (kept, not removed).
    pub corpus_repeats: u64,
    pub encodings: BTreeMap<String, u64>,
    pub formats: BTreeMap<String, u64>,
    pub episodes_synced: u64,
    pub pairs: BTreeMap<String, PairTotals>,
    pub episodes: Vec<EpisodeReport>,
}

impl Report {
    /// Fold in the report of a part of the run.
    pub fn merge(&mut self, o: Report) {
        self.files_paired += o.files_paired;
        self.files_skipped.extend(o.files_skipped);
        self.files_partial.extend(o.files_partial);
        self.duplicate_files.extend(o.duplicate_files);
        self.cues_src += o.cues_src;
        self.cues_tgt += o.cues_tgt;
        self.aligned += o.aligned;
        self.unaligned += o.unaligned;
        self.removed.add(&o.removed);
        self.duplicates_removed += o.duplicates_removed;
        self.corpus_repeats += o.corpus_repeats;
        for (k, v) in o.encodings {
            *self.encodings.entry(k).or_default() += v;
        }
        for (k, v) in o.formats {
            *self.formats.entry(k).or_default() += v;
        }
        self.episodes_synced += o.episodes_synced;
        for e in &o.episodes {
            let t = self.pairs.entry(e.pair.clone()).or_default();
            t.episodes += 1;
            t.src_cues += e.src_cues;
            t.aligned += e.aligned;
            t.aligned_share = t.aligned as f64 / t.src_cues.max(1) as f64;
        }
        self.episodes.extend(o.episodes);
    }
}
