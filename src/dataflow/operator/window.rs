//! Window assignment: gives each input row the windows its event time falls in (one for
//! TUMBLING, SIZE/ADVANCE for HOPPING, aligned to the epoch as ksqlDB does), and drops the
//! windows that already closed. A window [start, end) closes when the query's watermark (see
//! `BatchTime`: the smallest event time of its input partitions) reaches `end + grace`; a
//! record whose windows are all closed is late, and the caller reports it instead of losing
//! it silently.

use datafusion::arrow::array::{new_null_array, Array, AsArray, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::Int64Type;
use std::sync::Arc;

use super::BatchTime;
use crate::error::{EddyError, Result};
use crate::sql::{WindowKind, WindowSpec};

pub struct WindowOperator {
    pub spec: WindowSpec,
    pub rowtime: usize,
    /// The other side's event time, over a stream–stream join (`event_times`).
    pub other_rowtime: Option<usize>,
    pub window_start: usize,
    pub window_end: usize,
}

/// What one batch gave: its rows expanded per window, and the rows that came too late.
pub struct Windowed {
    pub batch: RecordBatch,
    /// Input row indexes whose every window had closed.
    pub late: Vec<usize>,
    /// Input rows that lost some but not all of their windows (hopping windows).
    pub partly_late: usize,
}

impl WindowOperator {
    /// The windows an event time falls in, oldest first.
    #[cfg(test)]
    pub fn windows(&self, ts: i64) -> Vec<(i64, i64)> {
        self.windows_of(ts).collect()
    }

    /// The windows an event time falls in, oldest first, without a list.
    fn windows_of(&self, ts: i64) -> impl Iterator<Item = (i64, i64)> {
        let size = self.spec.size_ms;
        let (first, step, count) = match self.spec.kind {
            WindowKind::Tumbling | WindowKind::Session => (ts - ts.rem_euclid(size), size, 1),
            WindowKind::Hopping { advance_ms } => {
                // Every start = k * advance with start <= ts < start + size.
                let last = ts - ts.rem_euclid(advance_ms);
                let mut count: i64 = 0;
                let mut start = last;
                while start > ts - size {
                    count += 1;
                    start -= advance_ms;
                }
                (start + advance_ms, advance_ms, count)
            }
        };
        (0..count).map(move |i| {
            let start = first + i * step;
            (start, start + size)
        })
    }

    /// Advances `time` row by row and returns the rows of open windows.
    pub fn process(&self, batch: &RecordBatch, time: &mut BatchTime) -> Result<Windowed> {
        let times = event_times(batch, self.rowtime, self.other_rowtime)?;
        let mut take_rows: Vec<u32> = Vec::with_capacity(batch.num_rows());
        let mut starts = Vec::with_capacity(batch.num_rows());
        let mut ends = Vec::with_capacity(batch.num_rows());
        let mut late = Vec::new();
        let mut partly_late = 0;
        for row in 0..batch.num_rows() {
            if times.is_null(row) {
                late.push(row);
                continue;
            }
            let ts = times.value(row);
            time.advance(ts);
            let (mut open, mut all) = (0, 0);
            for (start, end) in self.windows_of(ts) {
                all += 1;
                if end.saturating_add(self.spec.grace_ms) > time.watermark_ms {
                    take_rows.push(row as u32);
                    starts.push(start);
                    ends.push(end);
                    open += 1;
                }
            }
            if open == 0 {
                late.push(row);
            } else if open < all {
                partly_late += 1;
            }
        }
        let indices = UInt32Array::from(take_rows);
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (i, c) in batch.columns().iter().enumerate() {
            if i == self.window_start {
                columns.push(Arc::new(Int64Array::from(std::mem::take(&mut starts))) as _);
            } else if i == self.window_end {
                columns.push(Arc::new(Int64Array::from(std::mem::take(&mut ends))) as _);
            } else if c.null_count() == c.len() {
                // A column nothing reads (left NULL by the source): nothing to copy.
                columns.push(new_null_array(c.data_type(), indices.len()));
            } else {
                columns.push(take(c.as_ref(), &indices, None)?);
            }
        }
        Ok(Windowed { batch: RecordBatch::try_new(batch.schema(), columns)?, late, partly_late })
    }
}

/// Each row's event time: column `rowtime`, or over a stream–stream join the later of it and
/// the other side's `other` (a side left NULL by an outer join does not count).
pub fn event_times(batch: &RecordBatch, rowtime: usize, other: Option<usize>) -> Result<Int64Array> {
    let column = |i: usize| {
        batch.column(i).as_primitive_opt::<Int64Type>().cloned().ok_or_else(|| {
            EddyError::Internal(format!("event time column is {}, not BIGINT", batch.column(i).data_type()))
        })
    };
    let times = column(rowtime)?;
    let Some(other) = other else { return Ok(times) };
    let other = column(other)?;
    Ok(times
        .iter()
        .zip(other.iter())
        .map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: WindowKind, size_ms: i64, grace_ms: i64) -> WindowOperator {
        WindowOperator {
            spec: WindowSpec { kind, size_ms, grace_ms, retention_ms: None },
            rowtime: 0,
            other_rowtime: None,
            window_start: 1,
            window_end: 2,
        }
    }

    #[test]
    fn windows_align_to_the_epoch() {
        assert_eq!(op(WindowKind::Tumbling, 10, 0).windows(25), vec![(20, 30)]);
        assert_eq!(op(WindowKind::Tumbling, 10, 0).windows(-5), vec![(-10, 0)]);
        assert_eq!(op(WindowKind::Hopping { advance_ms: 5 }, 10, 0).windows(12), vec![(5, 15), (10, 20)]);
        assert_eq!(op(WindowKind::Hopping { advance_ms: 3 }, 10, 0).windows(10), vec![(3, 13), (6, 16), (9, 19)]);
    }

    #[test]
    fn records_past_grace_are_late() {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("rowtime", DataType::Int64, true),
            Field::new("windowstart", DataType::Int64, true),
            Field::new("windowend", DataType::Int64, true),
        ]));
        let nulls = || Arc::new(Int64Array::from(vec![None::<i64>; 4])) as _;
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![5, 31, 12, 29])) as _, nulls(), nulls()])
                .unwrap();
        let mut st = BatchTime { partition_ms: 0, others_ms: i64::MAX, watermark_ms: 0 };
        let out = op(WindowKind::Tumbling, 10, 2).process(&batch, &mut st).unwrap();
        assert_eq!(st.watermark_ms, 31);
        // 12 falls in [10, 20), closed at 22 <= 31; 29 is in [20, 30), open until 32.
        assert_eq!(out.late, vec![2]);
        assert_eq!(out.batch.num_rows(), 3);
        let starts = out.batch.column(1).as_primitive::<Int64Type>();
        assert_eq!(starts.values().to_vec(), vec![0, 30, 20]);
    }

    #[test]
    fn a_joined_row_is_as_late_as_its_later_side() {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("l_rowtime", DataType::Int64, true),
            Field::new("r_rowtime", DataType::Int64, true),
        ]));
        let left = Int64Array::from(vec![Some(5), Some(40), Some(7), None]);
        let right = Int64Array::from(vec![Some(9), Some(30), None, None]);
        let batch = RecordBatch::try_new(schema, vec![Arc::new(left) as _, Arc::new(right) as _]).unwrap();
        let times = event_times(&batch, 0, Some(1)).unwrap();
        // An outer join's missing side does not count; with neither, there is no time.
        assert_eq!(times.iter().collect::<Vec<_>>(), vec![Some(9), Some(40), Some(7), None]);
        assert_eq!(event_times(&batch, 0, None).unwrap().value(0), 5);
    }
}
