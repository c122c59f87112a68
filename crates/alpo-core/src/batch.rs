//! Aligned rows as an Arrow record batch with the columns of the `alpo align` contract.
//!
//! Strings are Arrow string views (`Utf8View`), the layout polars keeps strings in, so polars
//! takes the columns without converting them. A column that repeats one value per episode pair
//! (pair, title, file names, ...) stores each value once and repeats only its 16-byte view.

use crate::corpus::{PairRows, TextColumn};

use arrow_array::builder::make_view;
use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringViewArray, UInt32Array};
use arrow_buffer::{Buffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use std::sync::{Arc, LazyLock};

const STRINGS_BEFORE: [&str; 5] = ["pair", "title", "episode", "src_lang", "tgt_lang"];

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields: Vec<Field> = STRINGS_BEFORE
        .iter()
        .map(|n| Field::new(*n, DataType::Utf8View, false))
        .collect();
    fields.push(Field::new("line", DataType::UInt32, false));
    fields.push(Field::new("fragment", DataType::UInt32, false));
    for n in ["src_start_ms", "src_end_ms", "tgt_start_ms", "tgt_end_ms"] {
        fields.push(Field::new(n, DataType::Int64, false));
    }
    for n in ["src_text", "tgt_text", "src_file", "tgt_file"] {
        fields.push(Field::new(n, DataType::Utf8View, false));
    }
    fields.push(Field::new("dup", DataType::Boolean, false));
    Arc::new(Schema::new(fields))
});

pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// One batch from the rows of several episode pairs, in order.
pub fn to_batch(parts: &[PairRows]) -> RecordBatch {
    let n: usize = parts.iter().map(PairRows::len).sum();
    let repeated = |get: fn(&PairRows) -> &str| -> ArrayRef {
        let mut data = Vec::new();
        let mut views = Vec::with_capacity(n);
        for p in parts {
            let value = get(p).as_bytes();
            let view = make_view(value, 0, data.len() as u32);
            data.extend_from_slice(value);
            views.extend(std::iter::repeat_n(view, p.len()));
        }
        string_views(views, vec![data])
    };
    let texts = |get: fn(&PairRows) -> &TextColumn| -> ArrayRef {
        let mut blocks = Vec::new();
        let mut block = Vec::with_capacity(parts.iter().map(|p| get(p).byte_len()).sum());
        let mut views = Vec::with_capacity(n);
        for text in parts.iter().flat_map(|p| get(p).iter()) {
            let bytes = text.as_bytes();
            // Strings of up to 12 bytes live in the view itself; longer ones in a data block
            // whose offsets fit in 32 bits.
            if bytes.len() > 12 && block.len() + bytes.len() > u32::MAX as usize {
                blocks.push(std::mem::take(&mut block));
            }
            views.push(make_view(bytes, blocks.len() as u32, block.len() as u32));
            if bytes.len() > 12 {
                block.extend_from_slice(bytes);
            }
        }
        blocks.push(block);
        string_views(views, blocks)
    };
    let u32s = |get: fn(&PairRows) -> &Vec<u32>| -> ArrayRef {
        Arc::new(UInt32Array::from_iter_values(
            parts.iter().flat_map(|p| get(p).iter().copied()),
        ))
    };
    let i64s = |get: fn(&PairRows) -> &Vec<i64>| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            parts.iter().flat_map(|p| get(p).iter().copied()),
        ))
    };
    let columns = vec![
        repeated(|p| &p.pair),
        repeated(|p| &p.title),
        repeated(|p| &p.episode),
        repeated(|p| &p.src_lang),
        repeated(|p| &p.tgt_lang),
        u32s(|p| &p.line),
        u32s(|p| &p.fragment),
        i64s(|p| &p.src_start_ms),
        i64s(|p| &p.src_end_ms),
        i64s(|p| &p.tgt_start_ms),
        i64s(|p| &p.tgt_end_ms),
        texts(|p| &p.src_text),
        texts(|p| &p.tgt_text),
        repeated(|p| &p.src_file),
        repeated(|p| &p.tgt_file),
        Arc::new(BooleanArray::from(
            parts
                .iter()
                .flat_map(|p| p.dup.iter().copied())
                .collect::<Vec<bool>>(),
        )),
    ];
    RecordBatch::try_new(schema(), columns).expect("columns match the schema")
}

/// A string view array from views made by `make_view` over `blocks`.
fn string_views(views: Vec<u128>, blocks: Vec<Vec<u8>>) -> ArrayRef {
    let buffers = blocks.into_iter().map(Buffer::from_vec).collect();
    // SAFETY: every view was made by `make_view` from a whole `&str` copied into the block it
    // names at the offset it records (or inlined), so each view points at valid UTF-8 inside
    // its block; checking that again would cost a pass over every string.
    Arc::new(unsafe { StringViewArray::new_unchecked(ScalarBuffer::from(views), buffers, None) })
}
