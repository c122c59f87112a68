//! Prompt windows over an aligned corpus (the paper's release, method.md §1.5).
//!
//! Rows are the aligned lines of one language pair, sorted by episode and line. A *group* is a
//! run of rows that may share a window: one fragment of one episode. Inside a group, lines form
//! *segments* (one or more consecutive lines of one utterance). A window is
//!
//! ```text
//! [context before][core][context after]
//! ```
//!
//! where the core holds whole segments adding up to at least `core_lines` lines (the last core
//! of a group takes what remains) and each context holds the whole neighbouring segments of the
//! same group adding up to at least `context_lines` lines. A group whose last segment runs on
//! past its end (the utterance continues into a line that was not aligned) is cut back to that
//! segment's start; groups shorter than `min_lines` after that are skipped.

use arrow_array::builder::StringViewBuilder;
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch, StringViewArray, UInt32Array};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema};
use std::sync::Arc;

#[derive(Debug, Clone, Copy)]
pub struct WindowOptions {
    pub core_lines: usize,
    pub context_lines: usize,
    pub min_lines: usize,
}

impl Default for WindowOptions {
    fn default() -> Self {
        WindowOptions {
            core_lines: 25,
            context_lines: 5,
            min_lines: 10,
        }
    }
}

/// Rows `[start, end)` of the input; the core is `[start + core_start, start + core_end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: u32,
    pub end: u32,
    pub core_start: u32,
    pub core_end: u32,
}

/// What windowing left out, and why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Dropped {
    /// Groups (fragments) shorter than `min_lines`, and their lines.
    pub short_fragments: u64,
    pub short_fragment_lines: u64,
    /// Lines of a last segment cut off because it runs on past its fragment.
    pub open_segment_lines: u64,
}

#[derive(Debug, Default)]
pub struct Windows {
    pub windows: Vec<Window>,
    /// Segment index of every line of every window, from 0 within each window, window after
    /// window (window k's lines are `windows[k].end - windows[k].start` values).
    pub segment_of_line: Vec<u32>,
    pub dropped: Dropped,
}

/// Cut windows. `group[i]` changes wherever a fragment or episode border falls before row i;
/// `starts[i]` says row i starts a new segment (a group's first row always does); `open_end[i]`,
/// read at a group's last row, says its segment continues past the group.
pub fn windows(group: &[u32], starts: &[bool], open_end: &[bool], opts: WindowOptions) -> Windows {
    assert!(group.len() == starts.len() && group.len() == open_end.len());
    let mut out = Windows::default();
    let mut head = 0;
    while head < group.len() {
        let mut tail = head + 1;
        while tail < group.len() && group[tail] == group[head] {
            tail += 1;
        }
        // Segment starts inside [head, tail): the group's first row always starts one.
        let mut segs: Vec<usize> = (head..tail).filter(|&i| i == head || starts[i]).collect();
        let mut end = tail;
        if open_end[tail - 1] {
            let last = *segs.last().expect("a group has a segment");
            out.dropped.open_segment_lines += (end - last) as u64;
            end = last;
            segs.pop();
        }
        if end - head < opts.min_lines {
            out.dropped.short_fragments += 1;
            out.dropped.short_fragment_lines += (end - head) as u64;
        } else {
            segs.push(end); // sentinel: segment k is [segs[k], segs[k + 1])
            group_windows(&segs, opts, &mut out);
        }
        head = tail;
    }
    out
}

/// Windows of one group whose segment boundaries are `bounds` (the last one is the group's end).
fn group_windows(bounds: &[usize], opts: WindowOptions, out: &mut Windows) {
    let n_segs = bounds.len() - 1;
    let mut first = 0; // first segment of the next core
    while first < n_segs {
        let mut last = first + 1; // one past the core's last segment
        while last < n_segs && bounds[last] - bounds[first] < opts.core_lines {
            last += 1;
        }
        let mut before = first;
        while before > 0 && bounds[first] - bounds[before] < opts.context_lines {
            before -= 1;
        }
        let mut after = last;
        while after < n_segs && bounds[after] - bounds[last] < opts.context_lines {
            after += 1;
        }
        let start = bounds[before];
        out.windows.push(Window {
            start: start as u32,
            end: bounds[after] as u32,
            core_start: (bounds[first] - start) as u32,
            core_end: (bounds[last] - start) as u32,
        });
        for (k, seg) in (before..after).enumerate() {
            let len = bounds[seg + 1] - bounds[seg];
            out.segment_of_line
                .extend(std::iter::repeat_n(k as u32, len));
        }
        first = last;
    }
}

/// The texts of the input rows, one per row.
pub enum Texts<'a> {
    /// One Arrow string-view array: windows then share its text buffers and copy only the
    /// 16-byte views (a row sits in about 1.4 windows, and texts are most of the memory).
    Views(&'a StringViewArray),
    /// Anything else: the texts are copied.
    Strs(Vec<&'a str>),
}

impl Texts<'_> {
    /// Row `i`'s text.
    pub fn get(&self, i: usize) -> &str {
        match self {
            Texts::Views(array) => array.value(i),
            Texts::Strs(strs) => strs[i],
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Texts::Views(array) => array.len(),
            Texts::Strs(strs) => strs.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each window's lines as one string-view array, window after window.
    fn gather(&self, windows: &[Window], total: usize) -> ArrayRef {
        let rows = windows
            .iter()
            .flat_map(|x| x.start as usize..x.end as usize);
        match self {
            Texts::Views(array) => {
                let views = array.views();
                let gathered: Vec<u128> = rows.map(|r| views[r]).collect();
                // The same views over the same buffers: valid by construction.
                Arc::new(StringViewArray::new(
                    ScalarBuffer::from(gathered),
                    array.data_buffers().to_vec(),
                    None,
                ))
            }
            Texts::Strs(strs) => {
                let mut b = StringViewBuilder::with_capacity(total);
                for r in rows {
                    b.append_value(strs[r]);
                }
                Arc::new(b.finish())
            }
        }
    }
}

/// The windows as an Arrow record batch: `start`, `end`, `core_start`, `core_end` (u32),
/// `segment_of_line` (list of u32) and `src_lines`, `ref_lines` (lists of string views) with the
/// texts of the window's rows, taken from `src` and `tgt`.
pub fn to_batch(w: &Windows, src: &Texts, tgt: &Texts) -> RecordBatch {
    let mut offsets = Vec::with_capacity(w.windows.len() + 1);
    offsets.push(0i32);
    for x in &w.windows {
        offsets.push(offsets[offsets.len() - 1] + (x.end - x.start) as i32);
    }
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
    let lines = |texts: &Texts| -> ArrayRef {
        let values = texts.gather(&w.windows, w.segment_of_line.len());
        let item = Arc::new(Field::new("item", DataType::Utf8View, false));
        Arc::new(ListArray::new(item, offsets.clone(), values, None))
    };
    let u32s = |f: fn(&Window) -> u32| -> ArrayRef {
        Arc::new(UInt32Array::from_iter_values(w.windows.iter().map(f)))
    };
    let item = Arc::new(Field::new("item", DataType::UInt32, false));
    let segments = ListArray::new(
        item.clone(),
        offsets.clone(),
        Arc::new(UInt32Array::from(w.segment_of_line.clone())),
        None,
    );
    let text_list = DataType::List(Arc::new(Field::new("item", DataType::Utf8View, false)));
    let schema = Schema::new(vec![
        Field::new("start", DataType::UInt32, false),
        Field::new("end", DataType::UInt32, false),
        Field::new("core_start", DataType::UInt32, false),
        Field::new("core_end", DataType::UInt32, false),
        Field::new("segment_of_line", DataType::List(item), false),
        Field::new("src_lines", text_list.clone(), false),
        Field::new("ref_lines", text_list, false),
    ]);
    let columns = vec![
        u32s(|x| x.start),
        u32s(|x| x.end),
        u32s(|x| x.core_start),
        u32s(|x| x.core_end),
        Arc::new(segments) as ArrayRef,
        lines(src),
        lines(tgt),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("columns match the schema")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(core: usize, context: usize, min: usize) -> WindowOptions {
        WindowOptions {
            core_lines: core,
            context_lines: context,
            min_lines: min,
        }
    }

    #[test]
    fn whole_segments_core_and_context() {
        // one group of 12 lines; segments: [0,2) [2,3) [3,6) [6,7) [7,10) [10,12)
        let starts = [
            true, false, true, true, false, false, true, true, false, false, true, false,
        ];
        let w = windows(&[0; 12], &starts, &[false; 12], opts(4, 2, 3));
        let got: Vec<_> = w
            .windows
            .iter()
            .map(|w| (w.start, w.end, w.core_start, w.core_end))
            .collect();
        // cores: segs 0-2 -> [0,6) (>=4 lines), segs 3-4 -> [6,10), seg 5 -> [10,12) (remainder)
        // contexts: >=2 lines of whole segments around each core ([6,7) alone is too short)
        assert_eq!(got, [(0, 10, 0, 6), (3, 12, 3, 7), (7, 12, 3, 5)]);
        let seg: Vec<Vec<u32>> = {
            let mut at = 0;
            w.windows
                .iter()
                .map(|x| {
                    let n = (x.end - x.start) as usize;
                    at += n;
                    w.segment_of_line[at - n..at].to_vec()
                })
                .collect()
        };
        assert_eq!(seg[0], [0, 0, 1, 2, 2, 2, 3, 4, 4, 4]);
        assert_eq!(seg[1], [0, 0, 0, 1, 2, 2, 2, 3, 3]);
        assert_eq!(seg[2], [0, 0, 0, 1, 1]);
    }

    #[test]
    fn groups_are_never_crossed_and_short_ones_skipped() {
        let group = [0, 0, 0, 1, 1, 1, 1, 1];
        let w = windows(&group, &[true; 8], &[false; 8], opts(2, 1, 4));
        assert!(w.windows.iter().all(|x| x.start >= 3));
        assert_eq!(w.dropped.short_fragments, 1);
        assert_eq!(w.dropped.short_fragment_lines, 3);
        assert_eq!(w.windows.len(), 3);
    }

    #[test]
    fn open_last_segment_is_cut_back() {
        let starts = [true, false, true, false, false];
        let mut open = [false; 5];
        open[4] = true;
        let w = windows(&[0; 5], &starts, &open, opts(10, 0, 1));
        assert_eq!(w.dropped.open_segment_lines, 3);
        assert_eq!(
            w.windows,
            [Window {
                start: 0,
                end: 2,
                core_start: 0,
                core_end: 2
            }]
        );
    }

    #[test]
    fn shared_and_copied_texts_give_the_same_lines() {
        let texts: Vec<String> = (0..12)
            .map(|i| format!("line {i} {}", "long text ".repeat(i % 3)))
            .collect();
        let strs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let views = StringViewArray::from_iter_values(&strs);
        let w = windows(&[0; 12], &[true; 12], &[false; 12], opts(4, 1, 2));
        let a = to_batch(&w, &Texts::Views(&views), &Texts::Strs(strs.clone()));
        let b = to_batch(&w, &Texts::Strs(strs.clone()), &Texts::Views(&views));
        assert_eq!(a.column(5), b.column(5));
        assert_eq!(a.column(6), b.column(6));
        let lists = a.column(5).as_any().downcast_ref::<ListArray>().unwrap();
        let first = lists.value(1);
        let first = first.as_any().downcast_ref::<StringViewArray>().unwrap();
        let got: Vec<&str> = first.iter().map(Option::unwrap).collect();
        let (s, e) = (w.windows[1].start as usize, w.windows[1].end as usize);
        assert_eq!(got, strs[s..e]);
    }
}
