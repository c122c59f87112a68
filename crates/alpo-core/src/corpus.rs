//! A whole corpus: find subtitle files, group them into episodes, and align every episode's
//! language pairs, chunk by chunk so memory stays bounded however large the corpus is.
//!
//! Per episode: read -> decode -> parse -> clean each file once, drop second copies of a
//! language, then for each language pair: correct offset/drift, align, cut fragments. Episodes of
//! a chunk run in parallel; their output keeps the plan's order, so a run is deterministic.

use crate::align;
use crate::batch;
use crate::clean::{self, CleanOptions, Cue};
use crate::encoding;
use crate::error::{Error, Result};
use crate::formats::{self, Format};
use crate::names::{self, NameInfo};
use crate::report::{DuplicateFile, EpisodeReport, Partial, Report, Skipped};
use crate::sync::{self, Fit};
use arrow_array::RecordBatch;
use rayon::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The paper's rule: nearest start time within the gap.
    Nearest,
    /// Time-overlap links with 1:2 and 2:1 shapes.
    Overlap,
}

#[derive(Debug, Clone)]
pub struct AlignOptions {
    /// Keep only this (source, target) direction.
    pub pair: Option<(String, String)>,
    pub max_gap_ms: i64,
    pub sync: bool,
    pub mode: Mode,
    pub keep_top: bool,
    /// Least overlap (common / union) of a link in overlap mode.
    pub min_overlap: f64,
    /// Input bytes per chunk; bounds memory.
    pub chunk_bytes: u64,
}

impl Default for AlignOptions {
    fn default() -> Self {
        AlignOptions {
            pair: None,
            max_gap_ms: 700,
            sync: true,
            mode: Mode::Nearest,
            keep_top: false,
            min_overlap: 0.3,
            chunk_bytes: 64 << 20,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub name: NameInfo,
    pub ext_format: Option<Format>,
    pub size: u64,
}

/// The files of one episode, every language, and the direction its folder names if any.
#[derive(Debug, Clone)]
pub struct EpisodeJob {
    pub title: String,
    pub episode: String,
    pub files: Vec<SourceFile>,
    pub direction: Option<(String, String)>,
}

impl EpisodeJob {
    fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Walk the inputs and group subtitle files into episodes.
pub fn plan(inputs: &[PathBuf], opts: &AlignOptions) -> Result<(Vec<EpisodeJob>, Report)> {
    let mut report = Report::default();
    let mut paths = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| Error::io(input, e))?;
        if meta.is_dir() {
            walk(input, &mut paths)?;
        } else {
            paths.push(input.clone());
        }
    }
    paths.sort();
    paths.dedup();
    report.files_found = paths.len() as u64;
    let mut groups: BTreeMap<(String, String), EpisodeJob> = BTreeMap::new();
    for path in paths {
        let Some(name) = names::parse_name(&path) else {
            report.files_skipped.push(Skipped {
                file: path.display().to_string(),
                reason: "no language tag in the file name or its folder".into(),
            });
            continue;
        };
        if let Some((s, t)) = &opts.pair {
            if &name.lang != s && &name.lang != t {
                report.files_ignored += 1;
                continue;
            }
        }
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let ext_format = path
            .extension()
            .and_then(|e| e.to_str())
            .and_then(Format::from_extension);
        let direction = names::direction_hint(&path);
        let job = groups
            .entry((name.title.clone(), name.episode.clone()))
            .or_insert_with(|| EpisodeJob {
                title: name.title.clone(),
                episode: name.episode.clone(),
                files: Vec::new(),
                direction: direction.clone(),
            });
        job.files.push(SourceFile {
            path,
            name,
            ext_format,
            size,
        });
    }
    let mut jobs = Vec::new();
    for job in groups.into_values() {
        let mut langs: Vec<&str> = job.files.iter().map(|f| f.name.lang.as_str()).collect();
        langs.sort();
        langs.dedup();
        let partnered = match &opts.pair {
            Some((s, t)) => langs.contains(&s.as_str()) && langs.contains(&t.as_str()),
            None => langs.len() >= 2,
        };
        if partnered {
            jobs.push(job);
            continue;
        }
        for f in &job.files {
            let missing = match &opts.pair {
                Some((s, t)) => format!(
                    "no partner file in {} for this episode",
                    if &f.name.lang == s { t } else { s }
                ),
                None => "no partner file in another language for this episode".into(),
            };
            report.files_skipped.push(Skipped {
                file: f.path.display().to_string(),
                reason: missing,
            });
        }
    }
    Ok((jobs, report))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .and_then(Format::from_extension)
            .is_some()
        {
            out.push(path);
        }
    }
    Ok(())
}

/// A decoded file, the text its cues borrow from.
pub struct FileText {
    pub text: String,
    pub encoding: &'static str,
}

/// Read and decode one subtitle file. `Err` carries the reason it is unusable.
pub fn load_file(path: &Path, lang: Option<&str>) -> std::result::Result<FileText, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    let (text, encoding) = encoding::decode_owned(bytes, lang)?;
    Ok(FileText { text, encoding })
}

/// A parsed and cleaned file.
pub struct ReadFile<'a> {
    pub cues: Vec<Cue<'a>>,
    pub encoding: &'static str,
    pub format: Format,
    pub issue: Option<Partial>,
    pub removed: clean::CleanStats,
}

/// Parse and clean a loaded file. `Err` carries the reason it is unusable.
pub fn read_file<'a>(
    path: &Path,
    file: &'a FileText,
    clean_opts: CleanOptions,
) -> std::result::Result<ReadFile<'a>, String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .and_then(Format::from_extension);
    let (format, parsed) = formats::parse(&file.text, ext);
    let raw_count = parsed.cues.len();
    let issue = parsed.issue.clone().map(|i| Partial {
        file: path.display().to_string(),
        line: i.line,
        reason: i.reason,
        bad_lines: parsed.bad_lines,
    });
    if raw_count == 0 {
        return Err(match issue {
            Some(i) => format!("no cues ({} at line {})", i.reason, i.line),
            None => format!("no cues found (read as {})", format.name()),
        });
    }
    let (cues, removed) = clean::clean(parsed.cues, clean_opts);
    if cues.is_empty() {
        return Err(format!(
            "no usable cue among {raw_count}: {} end before start, {} empty, {} top-positioned, {} annotations",
            removed.end_before_start, removed.empty, removed.top, removed.annotation
        ));
    }
    Ok(ReadFile {
        cues,
        encoding: file.encoding,
        format,
        issue,
        removed,
    })
}

/// Rows of one aligned language pair of one episode.
#[derive(Debug, Default)]
pub struct PairRows {
    pub pair: String,
    pub title: String,
    pub episode: String,
    pub src_lang: String,
    pub tgt_lang: String,
    pub src_file: String,
    pub tgt_file: String,
    pub line: Vec<u32>,
    pub fragment: Vec<u32>,
    pub src_start_ms: Vec<i64>,
    pub src_end_ms: Vec<i64>,
    pub tgt_start_ms: Vec<i64>,
    pub tgt_end_ms: Vec<i64>,
    pub src_text: TextColumn,
    pub tgt_text: TextColumn,
    /// The same (source, target) text pair came earlier in the corpus (songs, recaps, stock
    /// phrases): flagged, never dropped, since windows need every line.
    pub dup: Vec<bool>,
    /// Hash of (pair, source text, target text) per row, computed on the worker threads.
    key: Vec<u64>,
}

impl PairRows {
    pub fn len(&self) -> usize {
        self.line.len()
    }

    pub fn is_empty(&self) -> bool {
        self.line.is_empty()
    }

    fn push(&mut self, line: u32, fragment: u32, src: (i64, i64, &str), tgt: (i64, i64, &str)) {
        self.line.push(line);
        self.fragment.push(fragment);
        self.src_start_ms.push(src.0);
        self.src_end_ms.push(src.1);
        self.src_text.push(src.2);
        self.tgt_start_ms.push(tgt.0);
        self.tgt_end_ms.push(tgt.1);
        self.tgt_text.push(tgt.2);
    }

    fn hash_keys(&mut self) {
        let pair = text_hash(0, &self.pair);
        self.key = self
            .src_text
            .iter()
            .zip(self.tgt_text.iter())
            .map(|(s, t)| text_hash(text_hash(pair, s), t))
            .collect();
    }
}

/// The texts of one column of an episode pair end to end in one string: rows are copied in, not
/// allocated one by one, and the Arrow column is cut from it directly.
#[derive(Debug, Default)]
pub struct TextColumn {
    data: String,
    ends: Vec<usize>,
}

impl TextColumn {
    pub fn push(&mut self, text: &str) {
        self.data.push_str(text);
        self.ends.push(self.data.len());
    }

    /// Bytes of all texts together.
    pub fn byte_len(&self) -> usize {
        self.data.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(a, &b)| &self.data[a..b])
    }
}

/// A fast 64-bit hash of `text` continuing from `seed`, eight bytes at a time (the multiply-
/// rotate mix of rustc's FxHash; the length goes in too, so ("ab", "c") differs from ("a",
/// "bc")). Collisions among 10M keys are unlikely by far (about 3e-6); a collision would only
/// flag a row as a repeat, never drop it.
fn text_hash(seed: u64, text: &str) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mix = |h: u64, w: u64| (h.rotate_left(5) ^ w).wrapping_mul(K);
    let bytes = text.as_bytes();
    let mut h = mix(seed, bytes.len() as u64);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = mix(h, u64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    mix(h, u64::from_le_bytes(tail))
}

/// The keys of `seen` are hashes already: use them as they are.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Process one episode: every file read once, every language pair aligned.
pub fn align_episode(job: &EpisodeJob, opts: &AlignOptions) -> (Vec<PairRows>, Report) {
    let mut report = Report::default();
    let clean_opts = CleanOptions {
        keep_top: opts.keep_top,
    };
    // Every file's text first: the cues borrow from it.
    let texts: Vec<_> = job
        .files
        .iter()
        .map(|f| load_file(&f.path, Some(&f.name.lang)))
        .collect();
    // language -> (file, read) of the copy kept
    let mut by_lang: BTreeMap<&str, (&SourceFile, ReadFile)> = BTreeMap::new();
    for (f, text) in job.files.iter().zip(&texts) {
        let file = f.path.display().to_string();
        let read = text.as_ref().map_err(Clone::clone);
        let read = match read.and_then(|text| read_file(&f.path, text, clean_opts)) {
            Ok(r) => r,
            Err(reason) => {
                report.files_skipped.push(Skipped { file, reason });
                continue;
            }
        };
        *report.encodings.entry(read.encoding.into()).or_default() += 1;
        *report.formats.entry(read.format.name().into()).or_default() += 1;
        report.removed.add(&read.removed);
        report.duplicates_removed += read.removed.rolling_duplicates;
        report.files_partial.extend(read.issue.clone());
        match by_lang.get(f.name.lang.as_str()) {
            None => {
                by_lang.insert(&f.name.lang, (f, read));
            }
            Some((kept, kept_read)) => {
                // Keep the copy with more cues; the first one on a tie.
                let same = same_content(&kept_read.cues, &read.cues);
                let reason = if same {
                    "same episode and language as the kept file, same content".to_string()
                } else {
                    "same episode and language as the kept file, another version".to_string()
                };
                report.duplicates_removed += 1;
                if read.cues.len() > kept_read.cues.len() {
                    report.duplicate_files.push(DuplicateFile {
                        file: kept.path.display().to_string(),
                        kept: file,
                        reason,
                    });
                    by_lang.insert(&f.name.lang, (f, read));
                } else {
                    report.duplicate_files.push(DuplicateFile {
                        file,
                        kept: kept.path.display().to_string(),
                        reason,
                    });
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut used: Vec<&str> = Vec::new();
    for (s, t) in directions(job, opts, by_lang.keys().copied().collect()) {
        let (src_file, src) = &by_lang[s];
        let (tgt_file, tgt) = &by_lang[t];
        let (rows, ep) = align_pair(job, (s, src_file, src), (t, tgt_file, tgt), opts);
        report.cues_src += ep.src_cues;
        report.cues_tgt += ep.tgt_cues;
        report.aligned += ep.aligned;
        report.unaligned += ep.unaligned;
        report.episodes_synced += ep.sync_applied as u64;
        report.episodes.push(ep);
        out.push(rows);
        used.extend([s, t]);
    }
    for (lang, (f, _)) in &by_lang {
        if used.contains(lang) {
            report.files_paired += 1;
        } else {
            report.files_skipped.push(Skipped {
                file: f.path.display().to_string(),
                reason: "no readable partner file in another language for this episode".into(),
            });
        }
    }
    (out, report)
}

fn same_content(a: &[Cue], b: &[Cue]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.start_ms == y.start_ms && x.end_ms == y.end_ms && x.text == y.text)
}

/// The (source, target) language pairs of an episode: the one of `--pair`, else every pair once,
/// in the direction the folder names, else English first, else alphabetical.
fn directions<'a>(
    job: &EpisodeJob,
    opts: &AlignOptions,
    langs: Vec<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let find = |l: &str| langs.iter().copied().find(|&x| x == l);
    if let Some((s, t)) = &opts.pair {
        return match (find(s), find(t)) {
            (Some(s), Some(t)) => vec![(s, t)],
            _ => vec![],
        };
    }
    let mut out = Vec::new();
    for (i, &a) in langs.iter().enumerate() {
        for &b in &langs[i + 1..] {
            let forward = match &job.direction {
                Some((s, t)) if s == a && t == b => true,
                Some((s, t)) if s == b && t == a => false,
                _ if a == "en" => true,
                _ if b == "en" => false,
                _ => true, // langs are sorted: alphabetical
            };
            out.push(if forward { (a, b) } else { (b, a) });
        }
    }
    out
}

fn align_pair(
    job: &EpisodeJob,
    (s_lang, s_file, src): (&str, &SourceFile, &ReadFile),
    (t_lang, t_file, tgt): (&str, &SourceFile, &ReadFile),
    opts: &AlignOptions,
) -> (PairRows, EpisodeReport) {
    let src_starts: Vec<i64> = src.cues.iter().map(|c| c.start_ms).collect();
    let tgt_starts: Vec<i64> = tgt.cues.iter().map(|c| c.start_ms).collect();
    let plain = align::nearest(&src_starts, &tgt_starts, opts.max_gap_ms);
    let share_plain = aligned_share(&plain);
    let (fit, matches) = if opts.sync {
        correct_timing(&src_starts, &tgt_starts, opts.max_gap_ms, plain)
    } else {
        (Fit::IDENTITY, plain)
    };
    let mut rows = PairRows {
        pair: format!("{s_lang}-{t_lang}"),
        title: job.title.clone(),
        episode: job.episode.clone(),
        src_lang: s_lang.to_string(),
        tgt_lang: t_lang.to_string(),
        src_file: s_file.path.display().to_string(),
        tgt_file: t_file.path.display().to_string(),
        ..Default::default()
    };
    let (s, t) = (&src.cues, &tgt.cues);
    // An unaligned source cue between two aligned ones starts a new fragment.
    let mut fragment = 0u32;
    let mut cut = false;
    let mut aligned_src = 0u64;
    type Side<'a> = (i64, i64, &'a str);
    let mut emit = |rows: &mut PairRows, cut: &mut bool, line: usize, src: Side, tgt: Side| {
        if *cut && !rows.is_empty() {
            fragment += 1;
        }
        *cut = false;
        rows.push(line as u32, fragment, src, tgt);
    };
    match opts.mode {
        Mode::Nearest => {
            for (i, m) in matches.iter().enumerate() {
                let Some(j) = m else {
                    cut = true;
                    continue;
                };
                let c = &t[*j as usize];
                aligned_src += 1;
                emit(
                    &mut rows,
                    &mut cut,
                    i,
                    (s[i].start_ms, s[i].end_ms, &s[i].text),
                    (c.start_ms, c.end_ms, &c.text),
                );
            }
        }
        Mode::Overlap => {
            let mapped: Vec<(i64, i64)> = s
                .iter()
                .map(|c| (fit.map(c.start_ms), fit.map(c.end_ms)))
                .collect();
            let plain: Vec<(i64, i64)> = t.iter().map(|c| (c.start_ms, c.end_ms)).collect();
            let mut next = 0usize;
            for link in align::overlap(&mapped, &plain, opts.min_overlap) {
                let (i, j) = (link.src as usize, link.tgt as usize);
                cut |= i > next;
                next = i + link.src_len as usize;
                aligned_src += link.src_len as u64;
                let (src, tgt) = (
                    joined(&s[i..next]),
                    joined(&t[j..j + link.tgt_len as usize]),
                );
                emit(
                    &mut rows,
                    &mut cut,
                    i,
                    (src.0, src.1, &src.2),
                    (tgt.0, tgt.1, &tgt.2),
                );
            }
        }
    }
    rows.hash_keys();
    let report = EpisodeReport {
        pair: rows.pair.clone(),
        title: job.title.clone(),
        episode: job.episode.clone(),
        src_file: rows.src_file.clone(),
        tgt_file: rows.tgt_file.clone(),
        src_cues: s.len() as u64,
        tgt_cues: t.len() as u64,
        aligned: aligned_src,
        unaligned: s.len() as u64 - aligned_src,
        aligned_share: aligned_src as f64 / s.len().max(1) as f64,
        fragments: rows.fragment.last().map_or(0, |f| *f as u64 + 1),
        offset_ms: fit.offset_ms,
        speed: fit.speed,
        sync_applied: fit != Fit::IDENTITY,
        aligned_share_unsynced: share_plain,
    };
    (rows, report)
}

fn aligned_share(matches: &[Option<u32>]) -> f64 {
    matches.iter().filter(|m| m.is_some()).count() as f64 / matches.len().max(1) as f64
}

/// Find an offset/drift between the tracks and keep it when it aligns clearly more cues, or as
/// many while moving cues enough to change which target is nearest. Returns the mapping used
/// and the matches under it (`plain`, the uncorrected matches, when none is kept).
fn correct_timing(
    src_starts: &[i64],
    tgt_starts: &[i64],
    max_gap_ms: i64,
    plain: Vec<Option<u32>>,
) -> (Fit, Vec<Option<u32>>) {
    let duration = src_starts.last().unwrap_or(&0) - src_starts.first().unwrap_or(&0);
    let Some(fit) = sync::estimate(src_starts, tgt_starts) else {
        return (Fit::IDENTITY, plain);
    };
    if fit.is_identity(duration, 50.0) {
        return (Fit::IDENTITY, plain);
    }
    let mapped: Vec<i64> = src_starts.iter().map(|&t| fit.map(t)).collect();
    let corrected = align::nearest(&mapped, tgt_starts, max_gap_ms);
    let gain = aligned_share(&corrected) - aligned_share(&plain);
    if gain > 0.01 || (gain >= 0.0 && !fit.is_identity(duration, 200.0)) {
        (fit, corrected)
    } else {
        (Fit::IDENTITY, plain)
    }
}

/// One span and text for consecutive cues merged by an overlap link.
fn joined(cues: &[Cue]) -> (i64, i64, String) {
    let text = cues.iter().fold(String::new(), |mut acc, c| {
        if !acc.is_empty() {
            let glue = acc.chars().last().is_some_and(encoding::is_cjk)
                && c.text.chars().next().is_some_and(encoding::is_cjk);
            if !glue {
                acc.push(' ');
            }
        }
        acc.push_str(&c.text);
        acc
    });
    let end = cues.iter().map(|c| c.end_ms).max().unwrap_or(0);
    (cues[0].start_ms, end, text)
}

/// Shared between a corpus run and whoever watches it.
#[derive(Debug, Default)]
pub struct Progress {
    pub report: Mutex<Report>,
    pub bytes_done: AtomicU64,
}

/// A corpus aligned chunk by chunk: each `next_chunk` processes the next episodes (about
/// `chunk_bytes` of input) in parallel and returns their rows.
pub struct CorpusAligner {
    jobs: Vec<EpisodeJob>,
    next: usize,
    opts: AlignOptions,
    pool: rayon::ThreadPool,
    /// Hashes of the (pair, source, target) texts seen so far, for the `dup` flag.
    seen: HashSet<u64, BuildHasherDefault<KeyHasher>>,
    pub progress: Arc<Progress>,
    pub bytes_total: u64,
}

impl CorpusAligner {
    pub fn new(inputs: &[PathBuf], opts: AlignOptions, threads: Option<usize>) -> Result<Self> {
        let (jobs, report) = plan(inputs, &opts)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.unwrap_or(0))
            .build()
            .map_err(|e| Error::Config(format!("cannot start worker threads: {e}")))?;
        let bytes_total = jobs.iter().map(EpisodeJob::bytes).sum();
        Ok(CorpusAligner {
            jobs,
            next: 0,
            opts,
            pool,
            seen: HashSet::default(),
            progress: Arc::new(Progress {
                report: Mutex::new(report),
                bytes_done: AtomicU64::new(0),
            }),
            bytes_total,
        })
    }

    pub fn episodes(&self) -> usize {
        self.jobs.len()
    }

    /// Rows of the next chunk, `None` when the corpus is done.
    pub fn next_chunk(&mut self) -> Option<Vec<PairRows>> {
        if self.next >= self.jobs.len() {
            return None;
        }
        let start = self.next;
        let mut bytes = 0;
        while self.next < self.jobs.len() && (self.next == start || bytes < self.opts.chunk_bytes) {
            bytes += self.jobs[self.next].bytes();
            self.next += 1;
        }
        let opts = &self.opts;
        let jobs = &self.jobs[start..self.next];
        let results: Vec<(Vec<PairRows>, Report)> = self
            .pool
            .install(|| jobs.par_iter().map(|j| align_episode(j, opts)).collect());
        let mut rows = Vec::new();
        let mut report = self.progress.report.lock().expect("report lock");
        for (r, rep) in results {
            rows.extend(r);
            report.merge(rep);
        }
        // In plan order, so which occurrence counts as the first does not depend on threads.
        for part in &mut rows {
            part.dup = part.key.iter().map(|&k| !self.seen.insert(k)).collect();
            report.corpus_repeats += part.dup.iter().filter(|&&d| d).count() as u64;
        }
        self.progress.bytes_done.fetch_add(bytes, Ordering::Relaxed);
        Some(rows)
    }

    /// The next chunk as Arrow record batches, one per worker thread, built in parallel.
    pub fn next_batches(&mut self) -> Option<Vec<RecordBatch>> {
        let rows = self.next_chunk()?;
        let per = rows.len().div_ceil(self.pool.current_num_threads()).max(1);
        Some(
            self.pool
                .install(|| rows.par_chunks(per).map(batch::to_batch).collect()),
        )
    }

    /// Run the corpus on a background thread that stays up to `depth` chunks ahead of the
    /// consumer, so aligning the next chunk overlaps with writing the last one.
    pub fn prefetch(mut self, depth: usize) -> Prefetch {
        let (tx, rx) = std::sync::mpsc::sync_channel(depth);
        let progress = self.progress.clone();
        let (bytes_total, episodes) = (self.bytes_total, self.episodes());
        let worker = std::thread::spawn(move || {
            while let Some(batches) = self.next_batches() {
                if tx.send(batches).is_err() {
                    break; // the consumer is gone
                }
            }
        });
        Prefetch {
            rx: Mutex::new(rx),
            worker: Mutex::new(Some(worker)),
            progress,
            bytes_total,
            episodes,
        }
    }
}

/// The consuming end of `CorpusAligner::prefetch`.
pub struct Prefetch {
    rx: Mutex<std::sync::mpsc::Receiver<Vec<RecordBatch>>>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub progress: Arc<Progress>,
    pub bytes_total: u64,
    pub episodes: usize,
}

impl Prefetch {
    /// The next chunk's batches; `None` once the corpus is done (the report is then complete).
    /// A crash of the worker thread is an error, never a silently short corpus.
    pub fn next(&self) -> Result<Option<Vec<RecordBatch>>> {
        if let Ok(batches) = self.rx.lock().expect("receiver lock").recv() {
            return Ok(Some(batches));
        }
        let worker = self.worker.lock().expect("worker lock").take();
        match worker.map(|handle| handle.join()) {
            Some(Err(_)) => Err(Error::Config(
                "the alignment worker crashed; the output is incomplete".into(),
            )),
            _ => Ok(None),
        }
    }
}
