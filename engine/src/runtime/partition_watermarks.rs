//! Per-partition watermarks of one source reader (Flink's per-split watermarks), for
//! connectors whose rows come from independently ordered partitions (Kafka topics).
//!
//! Each partition has its own [`WatermarkGenerator`]; the reader's watermark is the minimum
//! over its *active* partitions and never goes back. A partition that has sent no row for the
//! idle timeout turns idle: it stops holding the reader's watermark back until its next row,
//! which may then be late (as in Flink). A partition that has never sent a row holds the
//! watermark back until it turns idle. When every partition is idle the reader's watermark
//! is the maximum of theirs (as Flink's valve does for idle channels), whatever order they
//! turned idle in. The reader itself is idle when every partition is, or
//! when it has none at all; it then tells downstream operators to combine their watermarks
//! without it ([`crate::runtime::message::Message::Idle`]).
//!
//! State: each partition's watermark (checkpointed with the reader's position) and activity.

use std::collections::BTreeMap;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use tokio::time::Instant;

use crate::error::EngineResult;
use crate::runtime::message::EventTime;
use crate::runtime::source::{Segment, WatermarkGenerator};

/// The watermarks of a reader's partitions and the reader's combined watermark.
pub struct PartitionWatermarks {
    /// The generator each new partition starts with (no watermark yet).
    template: WatermarkGenerator,
    partitions: BTreeMap<i32, PartitionClock>,
    idle_timeout: Option<Duration>,
    /// Whether the connector has said which partitions it reads (before, the reader is not
    /// idle for having none).
    known: bool,
    /// The reader's watermark: what it last sent downstream.
    combined: Option<EventTime>,
    /// Watermarks restored from a checkpoint, for partitions not seen yet.
    restored: BTreeMap<i32, EventTime>,
}

struct PartitionClock {
    generator: WatermarkGenerator,
    /// When the partition last sent a row (or was assigned).
    last_row: Instant,
    idle: bool,
}

impl PartitionWatermarks {
    pub fn new(template: WatermarkGenerator, idle_timeout: Option<Duration>) -> Self {
        Self {
            template,
            partitions: BTreeMap::new(),
            idle_timeout,
            known: false,
            combined: None,
            restored: BTreeMap::new(),
        }
    }

    /// Continues from a checkpoint: the reader's watermark and each partition's.
    pub fn restore(&mut self, combined: Option<EventTime>, partitions: BTreeMap<i32, EventTime>) {
        self.combined = combined;
        for (partition, watermark) in &partitions {
            if let Some(clock) = self.partitions.get_mut(partition) {
                clock.generator.restore(*watermark);
            }
        }
        self.restored = partitions;
    }

    /// The reader's watermark (what a checkpoint records).
    pub fn current(&self) -> Option<EventTime> {
        self.combined
    }

    /// Each partition's watermark, for the checkpoint.
    pub fn partition_watermarks(&self) -> BTreeMap<i32, EventTime> {
        let mut out = self.restored.clone();
        for (partition, clock) in &self.partitions {
            if let Some(w) = clock.generator.current() {
                out.insert(*partition, w);
            }
        }
        out
    }

    /// The reader reads `assigned` (partitions it already had keep their state); new ones
    /// start active, without a watermark (or the restored one).
    pub fn assign(&mut self, assigned: &[i32], now: Instant) {
        self.known = true;
        for partition in assigned {
            self.partitions.entry(*partition).or_insert_with(|| {
                let mut generator = self.template.clone();
                if let Some(w) = self.restored.get(partition) {
                    generator.restore(*w);
                }
                PartitionClock {
                    generator,
                    last_row: now,
                    idle: false,
                }
            });
        }
    }

    /// Splits a batch of `partition`'s rows into runs, each followed by the reader's
    /// watermark if it advanced (see [`WatermarkGenerator::segments`]); the partition is
    /// active again.
    pub fn segments(
        &mut self,
        partition: i32,
        batch: &RecordBatch,
        now: Instant,
    ) -> EngineResult<Vec<Segment>> {
        if !self.partitions.contains_key(&partition) {
            self.assign(&[partition], now);
        }
        let clock = self.partitions.get_mut(&partition).expect("assigned above");
        clock.last_row = now;
        clock.idle = false;
        let runs = clock.generator.segments(batch)?;
        let mut out = Vec::with_capacity(runs.len());
        for (rows, advanced) in runs {
            let advanced = match advanced {
                Some(w) => self.combine(Some((partition, w))),
                None => None,
            };
            out.push((rows, advanced));
        }
        Ok(out)
    }

    /// Turns partitions idle that sent no row for the idle timeout; returns the reader's
    /// watermark if that let it advance.
    pub fn check_idle(&mut self, now: Instant) -> Option<EventTime> {
        let timeout = self.idle_timeout?;
        let mut changed = false;
        for clock in self.partitions.values_mut() {
            if !clock.idle && now.duration_since(clock.last_row) >= timeout {
                clock.idle = true;
                changed = true;
            }
        }
        if changed { self.combine(None) } else { None }
    }

    /// Whether the reader is idle: it knows its partitions and every one of them (if any) is
    /// idle.
    pub fn is_idle(&self) -> bool {
        self.known && self.partitions.values().all(|c| c.idle)
    }

    /// The reader's watermark from its active partitions (`partition`'s taken as `w`, for
    /// the end of a run within a batch); returns it if it advanced.
    fn combine(&mut self, at: Option<(i32, EventTime)>) -> Option<EventTime> {
        let watermark = |partition: i32, clock: &PartitionClock| match at {
            Some((p, w)) if p == partition => Some(w),
            _ => clock.generator.current(),
        };
        let min = if self.partitions.values().all(|c| c.idle) {
            // Every partition is idle: the maximum of their watermarks, so that the rows
            // they sent are not held back until one has messages again.
            self.partitions
                .iter()
                .filter_map(|(p, c)| watermark(*p, c))
                .max()?
        } else {
            let mut min: Option<EventTime> = None;
            for (partition, clock) in &self.partitions {
                if clock.idle {
                    continue;
                }
                // An active partition without a watermark holds the reader's back.
                let w = watermark(*partition, clock)?;
                min = Some(min.map_or(w, |m| m.min(w)));
            }
            min?
        };
        if self.combined.is_some_and(|c| min <= c) {
            return None;
        }
        self.combined = Some(min);
        Some(min)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::TimestampMillisecondArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    const MS: i64 = 1_000_000;

    fn batch(ms: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        )]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(TimestampMillisecondArray::from(ms.to_vec()))],
        )
        .unwrap()
    }

    fn clocks(idle: Option<Duration>) -> PartitionWatermarks {
        PartitionWatermarks::new(WatermarkGenerator::shifted(0, MS, 0), idle)
    }

    /// The watermark sent after the batch, if any.
    fn send(w: &mut PartitionWatermarks, partition: i32, ms: &[i64], now: Instant) -> Option<i64> {
        w.segments(partition, &batch(ms), now)
            .unwrap()
            .into_iter()
            .rev()
            .find_map(|(_, advanced)| advanced)
            .map(|w| w / MS)
    }

    #[test]
    fn the_reader_s_watermark_is_the_minimum_over_its_partitions() {
        let now = Instant::now();
        let mut w = clocks(None);
        w.assign(&[0, 1], now);
        assert_eq!(
            send(&mut w, 0, &[100], now),
            None,
            "partition 1 has no watermark"
        );
        assert_eq!(send(&mut w, 1, &[50], now), Some(50));
        assert_eq!(send(&mut w, 1, &[70], now), Some(70));
        assert_eq!(
            send(&mut w, 1, &[300], now),
            Some(100),
            "partition 0 holds it at 100"
        );
        assert_eq!(
            send(&mut w, 0, &[90], now),
            None,
            "a partition never goes back"
        );
        assert_eq!(send(&mut w, 0, &[400], now), Some(300));
        assert_eq!(
            w.partition_watermarks(),
            BTreeMap::from([(0, 400 * MS), (1, 300 * MS)])
        );
    }

    #[test]
    fn an_idle_partition_stops_holding_the_watermark_back_and_rejoins_with_data() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut w = clocks(Some(5 * second));
        w.assign(&[0, 1], start);
        assert_eq!(send(&mut w, 0, &[100], start), None);
        assert_eq!(w.check_idle(start + 4 * second), None, "not idle yet");
        assert_eq!(send(&mut w, 0, &[200], start + 4 * second), None);
        // Partition 1 never sent a row: idle after 5 s, and the watermark is partition 0's.
        assert_eq!(w.check_idle(start + 5 * second), Some(200 * MS));
        assert!(!w.is_idle(), "partition 0 is active");
        assert_eq!(send(&mut w, 0, &[300], start + 6 * second), Some(300));
        // Partition 1 comes back behind the watermark: it holds it back again from there,
        // and the reader's watermark does not go back.
        assert_eq!(send(&mut w, 1, &[250], start + 7 * second), None);
        assert_eq!(send(&mut w, 0, &[500], start + 7 * second), None);
        assert_eq!(send(&mut w, 1, &[400], start + 8 * second), Some(400));
        // Both quiet: both idle, the reader is idle, and its watermark is the maximum of
        // theirs (whatever order they turned idle in).
        assert_eq!(w.check_idle(start + 20 * second), Some(500 * MS));
        assert!(w.is_idle());
    }

    #[test]
    fn a_reader_without_partitions_is_idle_once_it_knows_it_has_none() {
        let mut w = clocks(None);
        assert!(!w.is_idle(), "its partitions are not known yet");
        w.assign(&[], Instant::now());
        assert!(w.is_idle());
    }

    #[test]
    fn restored_partitions_continue_from_their_own_watermarks() {
        let now = Instant::now();
        let mut w = clocks(None);
        w.restore(
            Some(100 * MS),
            BTreeMap::from([(0, 300 * MS), (1, 100 * MS)]),
        );
        w.assign(&[0, 1], now);
        // Partition 1 rises to 200: the reader's watermark is min(300, 200), as it would have
        // been without the restart.
        assert_eq!(send(&mut w, 1, &[200], now), Some(200));
        assert_eq!(send(&mut w, 0, &[250], now), None);
    }
}
