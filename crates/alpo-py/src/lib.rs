//! `alpo._core`: the thin Python binding of alpo-core. Heavy calls run with the GIL released;
//! rows cross as Arrow through the C stream interface (`__arrow_c_stream__`), which polars
//! imports without copying.

mod errors;

use alpo_core::batch;
use alpo_core::clean::{self, CleanOptions};
use alpo_core::corpus::{AlignOptions, CorpusAligner, Mode, Prefetch};
use alpo_core::formats::{self, Format};
use alpo_core::preference::{self, Candidate, PairOptions};
use alpo_core::{candidates, encoding, names, windows, Error};
use arrow_array::builder::{BooleanBuilder, Int64Builder, StringBuilder, UInt32Builder};
use arrow_array::cast::AsArray;
use arrow_array::ffi_stream::{FFI_ArrowArrayStream, RecordBatchStreamReader};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float32Array, Float64Array, RecordBatch, RecordBatchIterator,
    UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema};
use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use std::path::PathBuf;
use std::sync::Arc;

/// Record batches that polars (or pyarrow) can take through `__arrow_c_stream__`.
#[pyclass(module = "alpo._core", frozen)]
struct ArrowTable {
    batches: Vec<RecordBatch>,
    schema: arrow_schema::SchemaRef,
}

#[pymethods]
impl ArrowTable {
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema; // the schema is fixed; consumers cast if they must
        let reader = RecordBatchIterator::new(
            self.batches.clone().into_iter().map(Ok),
            self.schema.clone(),
        );
        let stream = FFI_ArrowArrayStream::new(Box::new(reader));
        PyCapsule::new_with_value(py, stream, c"arrow_array_stream")
    }

    fn __len__(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

fn mode(name: &str) -> PyResult<Mode> {
    match name {
        "nearest" => Ok(Mode::Nearest),
        "overlap" => Ok(Mode::Overlap),
        other => Err(errors::to_py(Error::Config(format!(
            "unknown alignment mode {other:?} (use nearest or overlap)"
        )))),
    }
}

/// Aligns a corpus chunk by chunk on a background thread, one chunk ahead of the consumer;
/// `next_batch` waits for it with the GIL released.
#[pyclass(module = "alpo._core")]
struct Aligner {
    inner: Prefetch,
}

#[pymethods]
impl Aligner {
    #[new]
    #[pyo3(signature = (paths, pair=None, max_gap=0.7, sync=true, mode="nearest", keep_top=false, min_overlap=0.3, threads=None, chunk_mb=64))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        paths: Vec<PathBuf>,
        pair: Option<(String, String)>,
        max_gap: f64,
        sync: bool,
        mode: &str,
        keep_top: bool,
        min_overlap: f64,
        threads: Option<usize>,
        chunk_mb: u64,
    ) -> PyResult<Self> {
        let pair = match pair {
            Some((s, t)) => Some((lang(&s)?, lang(&t)?)),
            None => None,
        };
        if !(max_gap >= 0.0 && max_gap.is_finite()) {
            return Err(errors::to_py(Error::Config(format!(
                "max_gap must be a non-negative number of seconds, got {max_gap}"
            ))));
        }
        let opts = AlignOptions {
            pair,
            max_gap_ms: (max_gap * 1000.0).round() as i64,
            sync,
            mode: self::mode(mode)?,
            keep_top,
            min_overlap,
            chunk_bytes: chunk_mb.max(1) << 20,
        };
        let inner = py
            .detach(|| CorpusAligner::new(&paths, opts, threads))
            .map_err(errors::to_py)?;
        Ok(Aligner {
            inner: inner.prefetch(1),
        })
    }

    /// Rows of the next chunk of episodes, or None when the corpus is done.
    fn next_batch(&self, py: Python<'_>) -> PyResult<Option<ArrowTable>> {
        let inner = &self.inner;
        let batches = py.detach(|| inner.next()).map_err(errors::to_py)?;
        Ok(batches.map(|batches| ArrowTable {
            batches,
            schema: batch::schema(),
        }))
    }

    /// An empty table with the output schema.
    fn empty(&self) -> ArrowTable {
        ArrowTable {
            batches: vec![],
            schema: batch::schema(),
        }
    }

    /// The run's report so far, as JSON.
    fn report_json(&self) -> String {
        let report = self.inner.progress.report.lock().expect("report lock");
        serde_json::to_string(&*report).expect("report serializes")
    }

    #[getter]
    fn episodes(&self) -> usize {
        self.inner.episodes
    }

    #[getter]
    fn bytes_total(&self) -> u64 {
        self.inner.bytes_total
    }

    #[getter]
    fn bytes_done(&self) -> u64 {
        self.inner
            .progress
            .bytes_done
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// ISO 639-1 code of a language tag (`zh-Hans` -> `zh`), or a ConfigError.
#[pyfunction]
fn lang(tag: &str) -> PyResult<String> {
    names::lang_code(tag)
        .map(String::from)
        .ok_or_else(|| errors::to_py(Error::Config(format!("unknown language {tag:?}"))))
}

/// What `read_subtitles` returns: the cues, the encoding, the format, and where parsing broke.
type ReadResult = (ArrowTable, String, String, Option<(u32, String)>);

/// Read one subtitle file: (table, encoding, format, partial-parse note or None).
#[pyfunction]
#[pyo3(signature = (path, lang=None, clean=true, keep_top=true))]
fn read_subtitles(
    py: Python<'_>,
    path: PathBuf,
    lang: Option<String>,
    clean: bool,
    keep_top: bool,
) -> PyResult<ReadResult> {
    py.detach(|| {
        let lang = lang.or_else(|| names::parse_name(&path).map(|n| n.lang));
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let decoded =
            encoding::decode(&bytes, lang.as_deref()).map_err(|reason| Error::Encoding {
                path: path.clone(),
                reason,
            })?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .and_then(Format::from_extension);
        let (format, parsed) = formats::parse(&decoded.text, ext);
        let issue = parsed.issue.clone().map(|i| (i.line, i.reason));
        if parsed.cues.is_empty() {
            let (line, reason) = issue.unwrap_or((0, "no cues found".into()));
            return Err(Error::Parse { path, line, reason });
        }
        let cues: Vec<clean::Cue<'_>> = if clean {
            clean::clean(parsed.cues, CleanOptions { keep_top }).0
        } else {
            parsed
                .cues
                .into_iter()
                .map(|r| clean::Cue {
                    start_ms: r.start_ms,
                    end_ms: r.end_ms,
                    text: r.text,
                    style: r.style,
                    top: r.top,
                    line: r.line,
                })
                .collect()
        };
        Ok((
            cue_table(&cues),
            decoded.encoding.to_string(),
            format.name().to_string(),
            issue,
        ))
    })
    .map_err(errors::to_py)
}

/// The plain text of raw cue texts as cleaning makes it (markup out, one line, annotation
/// lines cut), for callers that keep every cue, such as the translator.
#[pyfunction]
fn clean_texts(py: Python<'_>, texts: Vec<String>) -> Vec<String> {
    py.detach(|| texts.iter().map(|t| clean::clean_text(t).0).collect())
}

fn cue_table(cues: &[clean::Cue<'_>]) -> ArrowTable {
    let mut start = Int64Builder::new();
    let mut end = Int64Builder::new();
    let mut text = StringBuilder::new();
    let mut style = StringBuilder::new();
    let mut top = BooleanBuilder::new();
    let mut line = UInt32Builder::new();
    for c in cues {
        start.append_value(c.start_ms);
        end.append_value(c.end_ms);
        text.append_value(&c.text);
        style.append_value(c.style);
        top.append_value(c.top);
        line.append_value(c.line);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("start_ms", DataType::Int64, false),
        Field::new("end_ms", DataType::Int64, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("style", DataType::Utf8, false),
        Field::new("top", DataType::Boolean, false),
        Field::new("line", DataType::UInt32, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(start.finish()),
        Arc::new(end.finish()),
        Arc::new(text.finish()),
        Arc::new(style.finish()),
        Arc::new(top.finish()),
        Arc::new(line.finish()),
    ];
    ArrowTable {
        batches: vec![RecordBatch::try_new(schema.clone(), columns).expect("schema")],
        schema,
    }
}

/// The paper's nearest-start rule on two lists of start times (ms), for checking and research.
#[pyfunction]
#[pyo3(signature = (src, tgt, max_gap_ms=700))]
fn nearest(src: Vec<i64>, tgt: Vec<i64>, max_gap_ms: i64) -> PyResult<Vec<Option<u32>>> {
    if !src.is_sorted() || !tgt.is_sorted() {
        return Err(errors::to_py(Error::Config(
            "start times must be sorted ascending".into(),
        )));
    }
    Ok(alpo_core::align::nearest(&src, &tgt, max_gap_ms))
}

/// Columns of a polars DataFrame (anything with `__arrow_c_stream__`), batch by batch.
fn import_batches(frame: &Bound<'_, PyAny>) -> PyResult<Vec<RecordBatch>> {
    let capsule = frame.call_method0("__arrow_c_stream__")?;
    let capsule = capsule.cast::<PyCapsule>()?;
    let ptr = capsule.pointer_checked(Some(c"arrow_array_stream"))?;
    // SAFETY: the capsule holds an ArrowArrayStream (checked by its name); `from_raw` moves the
    // stream out and leaves a released one behind, as the PyCapsule protocol expects.
    let reader = unsafe { RecordBatchStreamReader::from_raw(ptr.as_ptr().cast()) }
        .map_err(|e| errors::to_py(Error::Config(format!("cannot read Arrow data: {e}"))))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| errors::to_py(Error::Config(format!("cannot read Arrow data: {e}"))))
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> PyResult<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            errors::to_py(Error::Config(format!(
                "column {name} is missing or of the wrong type"
            )))
        })
}

/// A u32 column over all batches.
fn u32s(batches: &[RecordBatch], name: &str) -> PyResult<Vec<u32>> {
    let mut out = Vec::new();
    for batch in batches {
        out.extend(column::<UInt32Array>(batch, name)?.values().iter().copied());
    }
    Ok(out)
}

/// A boolean column over all batches.
fn bools(batches: &[RecordBatch], name: &str) -> PyResult<Vec<bool>> {
    let mut out = Vec::new();
    for batch in batches {
        out.extend(column::<BooleanArray>(batch, name)?.values().iter());
    }
    Ok(out)
}

/// The texts of a column over all batches: shared as-is when they come as one string-view
/// array (what polars sends), copied out of any other layout.
fn texts<'a>(batches: &'a [RecordBatch], name: &str) -> PyResult<windows::Texts<'a>> {
    let cols = batches
        .iter()
        .map(|b| b.column_by_name(name))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| errors::to_py(Error::Config(format!("column {name} is missing"))))?;
    if let [col] = cols.as_slice() {
        if let Some(views) = col.as_string_view_opt() {
            if views.null_count() == 0 {
                return Ok(windows::Texts::Views(views));
            }
        }
    }
    let mut strs = Vec::new();
    for col in cols {
        if let Some(a) = col.as_string_view_opt() {
            strs.extend(a.iter().map(|v| v.unwrap_or("")));
        } else if let Some(a) = col.as_string_opt::<i32>() {
            strs.extend(a.iter().map(|v| v.unwrap_or("")));
        } else if let Some(a) = col.as_string_opt::<i64>() {
            strs.extend(a.iter().map(|v| v.unwrap_or("")));
        } else {
            return Err(errors::to_py(Error::Config(format!(
                "column {name} is not text"
            ))));
        }
    }
    Ok(windows::Texts::Strs(strs))
}

/// Prompt windows (see alpo-core `windows`) from a frame with columns `group` (u32), `starts`,
/// `open_end` (bool), `src_text` and `tgt_text`. Returns the windows as a table (start, end,
/// core_start, core_end, segment_of_line, src_lines, ref_lines) and what was dropped, as JSON.
#[pyfunction]
#[pyo3(signature = (frame, core_lines=25, context_lines=5, min_lines=10))]
fn prepare_windows(
    py: Python<'_>,
    frame: &Bound<'_, PyAny>,
    core_lines: usize,
    context_lines: usize,
    min_lines: usize,
) -> PyResult<(ArrowTable, String)> {
    let batches = import_batches(frame)?;
    let group = u32s(&batches, "group")?;
    let starts = bools(&batches, "starts")?;
    let open_end = bools(&batches, "open_end")?;
    let opts = windows::WindowOptions {
        core_lines,
        context_lines,
        min_lines,
    };
    let (src, tgt) = (texts(&batches, "src_text")?, texts(&batches, "tgt_text")?);
    let (batch, dropped) = py.detach(|| {
        let w = windows::windows(&group, &starts, &open_end, opts);
        (windows::to_batch(&w, &src, &tgt), w.dropped)
    });
    let table = ArrowTable {
        schema: batch.schema(),
        batches: vec![batch],
    };
    Ok((table, serde_json::to_string(&dropped).expect("serializes")))
}

/// Which candidates are new within their segment: a frame with columns `group` (u32; a
/// group's rows consecutive, its reference first) and `text`. Keys are NFC texts with
/// whitespace trimmed and folded (alpo-core `candidates`). Returns one bool per row.
#[pyfunction]
fn distinct_candidates(py: Python<'_>, frame: &Bound<'_, PyAny>) -> PyResult<Vec<bool>> {
    let batches = import_batches(frame)?;
    let group = u32s(&batches, "group")?;
    let text = texts(&batches, "text")?;
    Ok(py.detach(|| candidates::first_distinct(&group, |i| text.get(i))))
}

/// Preference pairs per segment (alpo-core `preference`) from a frame with columns
/// `window_id` (str), `segment` (u32), `score` (f32, null when not scored) and `chars` (u32, the
/// candidate's text length), rows ordered by window, segment and candidate. Returns a table with
/// one row per segment: window_row (u64, the first input row of its window), segment, gated,
/// chosen, rejected, gap, weight, beta, n_candidates.
#[pyfunction]
#[pyo3(signature = (frame, min_candidates=3, min_spread=5.0, beta0=1.0, top_chosen=3,
    rejected_rank=3, seed=1024, gate=true, importance=true, dynamic_beta=true, beta=0.5))]
#[allow(clippy::too_many_arguments)]
fn build_pairs(
    py: Python<'_>,
    frame: &Bound<'_, PyAny>,
    min_candidates: usize,
    min_spread: f64,
    beta0: f64,
    top_chosen: usize,
    rejected_rank: usize,
    seed: u64,
    gate: bool,
    importance: bool,
    dynamic_beta: bool,
    beta: f64,
) -> PyResult<ArrowTable> {
    let batches = import_batches(frame)?;
    let segment = u32s(&batches, "segment")?;
    let mut cands = Vec::new();
    for batch in &batches {
        let score = column::<Float32Array>(batch, "score")?;
        let chars = column::<UInt32Array>(batch, "chars")?;
        cands.extend((0..score.len()).map(|i| Candidate {
            score: score.is_valid(i).then(|| score.value(i)),
            chars: chars.value(i),
        }));
    }
    let ids = texts(&batches, "window_id")?;
    let opts = PairOptions {
        min_candidates,
        min_spread,
        beta0,
        top_chosen,
        rejected_rank,
        seed,
        gate,
        importance,
        dynamic_beta,
        beta,
    };
    let pairs =
        py.detach(|| preference::build(segment.len(), |i| ids.get(i), &segment, &cands, &opts));
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "window_row",
            Arc::new(UInt64Array::from_iter_values(
                pairs.iter().map(|(r, _)| *r as u64),
            )),
        ),
        (
            "segment",
            Arc::new(UInt32Array::from_iter_values(
                pairs.iter().map(|(_, p)| p.segment),
            )),
        ),
        (
            "gated",
            Arc::new(BooleanArray::from(
                pairs.iter().map(|(_, p)| p.gated).collect::<Vec<_>>(),
            )),
        ),
        (
            "chosen",
            Arc::new(pairs.iter().map(|(_, p)| p.chosen).collect::<UInt32Array>()),
        ),
        (
            "rejected",
            Arc::new(
                pairs
                    .iter()
                    .map(|(_, p)| p.rejected)
                    .collect::<UInt32Array>(),
            ),
        ),
        (
            "gap",
            Arc::new(pairs.iter().map(|(_, p)| p.gap).collect::<Float64Array>()),
        ),
        (
            "weight",
            Arc::new(Float64Array::from_iter_values(
                pairs.iter().map(|(_, p)| p.weight),
            )),
        ),
        (
            "beta",
            Arc::new(Float64Array::from_iter_values(
                pairs.iter().map(|(_, p)| p.beta),
            )),
        ),
        (
            "n_candidates",
            Arc::new(UInt32Array::from_iter_values(
                pairs.iter().map(|(_, p)| p.n_candidates),
            )),
        ),
    ];
    let batch = RecordBatch::try_from_iter(columns)
        .map_err(|e| errors::to_py(Error::Config(format!("cannot build the pairs table: {e}"))))?;
    Ok(ArrowTable {
        schema: batch.schema(),
        batches: vec![batch],
    })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Aligner>()?;
    m.add_class::<ArrowTable>()?;
    m.add_function(wrap_pyfunction!(distinct_candidates, m)?)?;
    m.add_function(wrap_pyfunction!(build_pairs, m)?)?;
    m.add_function(wrap_pyfunction!(read_subtitles, m)?)?;
    m.add_function(wrap_pyfunction!(clean_texts, m)?)?;
    m.add_function(wrap_pyfunction!(lang, m)?)?;
    m.add_function(wrap_pyfunction!(nearest, m)?)?;
    m.add_function(wrap_pyfunction!(prepare_windows, m)?)?;
    errors::register(m)
}
