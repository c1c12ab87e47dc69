//! The `histogram` flow rule's per-path windows, in the core: the twin of pipeline/path_histogram.py's
//! PathHistograms, step for step (windows on the sources' clock, late probes, loss from sequence gaps per
//! session, closing by a later window, by the clock plus the path's lag and the grace, or at flush).
//!
//! Its input is a probe's values as the core read them from the frame (`HistProbe`), never a record; its
//! output a closed window's counts (`Closed`), which the Python side makes a PathHistogram record of.

use std::collections::HashMap;

const SEQUENCE_MOD: i64 = 1 << 16;

/// What the histogram function needs of one probe.
#[derive(Debug, Clone, Default)]
pub struct HistProbe {
    pub rule: u32,
    pub src: [u8; 16],
    pub sink: Option<[u8; 16]>,
    pub src_ns: i64,
    pub sink_ns: i64,
    pub capture_ns: u64,
    pub session: u16,
    pub sequence: u16,
    /// End-to-end delay: a sink and the source's TLV (src_ns) known.
    pub e2e: Option<i64>,
    /// The midpoints, in path order: (interface id, reconstructed time).
    pub hops: Vec<(u16, Option<i64>)>,
}

/// Delays counted: per bucket (bounds[i-1] < d <= bounds[i], the last above every bound), min, max, sum.
#[derive(Debug, Clone)]
pub struct Delays {
    pub buckets: Vec<u64>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub sum: i128,
}

impl Delays {
    fn new(bounds: usize) -> Self {
        Delays { buckets: vec![0; bounds + 1], min: None, max: None, sum: 0 }
    }

    fn observe(&mut self, bounds: &[i64], d: i64) {
        self.buckets[bounds.partition_point(|b| *b < d)] += 1;
        self.min = Some(self.min.map_or(d, |m| m.min(d)));
        self.max = Some(self.max.map_or(d, |m| m.max(d)));
        self.sum += i128::from(d);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

type PathKey = ([u8; 16], Option<[u8; 16]>, Vec<u16>);

#[derive(Debug)]
struct Window {
    start: i128,
    count: u64,
    loss: u64,
    e2e: Delays,
    hops: Vec<Delays>,
}

#[derive(Debug, Default)]
struct Path {
    window: Option<Window>,
    closed_until: i128,
    lag: i128,
}

/// A closed window of one path.
#[derive(Debug)]
pub struct Closed {
    pub start: i128,
    pub src: [u8; 16],
    pub sink: Option<[u8; 16]>,
    pub hop_if_ids: Vec<u16>,
    pub count: u64,
    pub loss: u64,
    pub e2e: Delays,
    pub hops: Vec<Delays>,
}

/// One histogram rule's paths and windows.
#[derive(Debug)]
pub struct PathHistograms {
    pub interval_ns: i64,
    pub grace_ns: i64,
    pub bounds: Vec<i64>,
    pub hop_bounds: Vec<i64>,
    pub late: u64,
    keys: Vec<PathKey>,
    paths: Vec<Path>,
    place: HashMap<PathKey, usize>,
    last_sequence: HashMap<([u8; 16], u16), i64>,
    next_check: Option<i128>,
}

impl PathHistograms {
    pub fn new(interval_ns: i64, grace_ns: i64, bounds: Vec<i64>, hop_bounds: Vec<i64>) -> Self {
        PathHistograms {
            interval_ns,
            grace_ns,
            bounds,
            hop_bounds,
            late: 0,
            keys: Vec::new(),
            paths: Vec::new(),
            place: HashMap::new(),
            last_sequence: HashMap::new(),
            next_check: None,
        }
    }

    fn due(&self, path: &Path) -> i128 {
        let start = path.window.as_ref().expect("an open window").start;
        start + i128::from(self.interval_ns) + path.lag + i128::from(self.grace_ns)
    }

    /// Sequence numbers skipped just before this probe's, in its session (SessionGaps.lost_before).
    fn lost_before(&mut self, p: &HistProbe) -> u64 {
        let sequence = i64::from(p.sequence);
        match self.last_sequence.get_mut(&(p.src, p.session)) {
            None => {
                self.last_sequence.insert((p.src, p.session), sequence);
                0
            }
            Some(last) => {
                let step = (sequence - *last).rem_euclid(SEQUENCE_MOD);
                if step == 0 || step >= SEQUENCE_MOD / 2 {
                    return 0;
                }
                *last = sequence;
                (step - 1) as u64
            }
        }
    }

    /// Count a probe; the window it closed (its path's earlier one), if any.
    pub fn add(&mut self, p: &HistProbe) -> Option<Closed> {
        let key: PathKey = (p.src, p.sink, p.hops.iter().map(|h| h.0).collect());
        let at = match self.place.get(&key) {
            Some(at) => *at,
            None => {
                self.keys.push(key.clone());
                self.paths.push(Path::default());
                self.place.insert(key, self.paths.len() - 1);
                self.paths.len() - 1
            }
        };
        // times in i128, as Python's integers: a capture time past i64 (a library caller's) does not wrap
        let time_ns = if p.src_ns != 0 { i128::from(p.src_ns) } else { i128::from(p.capture_ns) };
        let start = time_ns - time_ns.rem_euclid(i128::from(self.interval_ns));
        let path = &self.paths[at];
        if start < path.closed_until || path.window.as_ref().is_some_and(|w| start < w.start) {
            self.late += 1;
            return None;
        }
        self.paths[at].lag = i128::from(p.capture_ns) - time_ns;
        let mut closed = None;
        if self.paths[at].window.as_ref().is_some_and(|w| start > w.start) {
            closed = Some(self.close(at));
        }
        if self.paths[at].window.is_none() {
            let hops = (0..=p.hops.len()).map(|_| Delays::new(self.hop_bounds.len())).collect();
            let e2e = Delays::new(self.bounds.len());
            self.paths[at].window = Some(Window { start, count: 0, loss: 0, e2e, hops });
            let due = self.due(&self.paths[at]);
            if self.next_check.is_none_or(|next| due < next) {
                self.next_check = Some(due);
            }
        }
        let loss = self.lost_before(p);
        let (bounds, hop_bounds) = (&self.bounds, &self.hop_bounds);
        let window = self.paths[at].window.as_mut().expect("opened above");
        window.count += 1;
        window.loss += loss;
        if let Some(e2e) = p.e2e {
            window.e2e.observe(bounds, e2e);
            let mut previous = Some(p.src_ns);
            for (delays, (_, time)) in window.hops.iter_mut().zip(&p.hops) {
                if let (Some(t), Some(prev)) = (time, previous) {
                    delays.observe(hop_bounds, t - prev);
                }
                previous = *time;
            }
            if let Some(prev) = previous {
                window.hops.last_mut().expect("hops + 1").observe(hop_bounds, p.sink_ns - prev);
            }
        }
        closed
    }

    /// The windows the clock has passed (their end as the source sees it, plus the grace), in path order.
    pub fn tick(&mut self, now_ns: i128) -> Vec<Closed> {
        if self.next_check.is_none_or(|next| now_ns < next) {
            return Vec::new();
        }
        let (mut closed, mut next_check) = (Vec::new(), None);
        for at in 0..self.paths.len() {
            if self.paths[at].window.is_none() {
                continue;
            }
            let due = self.due(&self.paths[at]);
            if due <= now_ns {
                closed.push(self.close(at));
            } else if next_check.is_none_or(|next| due < next) {
                next_check = Some(due);
            }
        }
        self.next_check = next_check;
        closed
    }

    /// Every open window, now, in path order.
    pub fn flush(&mut self) -> Vec<Closed> {
        let open: Vec<usize> = (0..self.paths.len()).filter(|at| self.paths[*at].window.is_some()).collect();
        self.next_check = None;
        open.into_iter().map(|at| self.close(at)).collect()
    }

    fn close(&mut self, at: usize) -> Closed {
        let window = self.paths[at].window.take().expect("an open window");
        self.paths[at].closed_until = window.start + i128::from(self.interval_ns);
        let (src, sink, hop_if_ids) = self.keys[at].clone();
        Closed {
            start: window.start,
            src,
            sink,
            hop_if_ids,
            count: window.count,
            loss: window.loss,
            e2e: window.e2e,
            hops: window.hops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(sequence: u16, src_ns: i64, hops: Vec<(u16, Option<i64>)>) -> HistProbe {
        HistProbe {
            src: [1; 16],
            sink: Some([2; 16]),
            src_ns,
            sink_ns: src_ns + 1000,
            capture_ns: (src_ns + 2000) as u64,
            session: 1,
            sequence,
            e2e: Some(1000),
            hops,
            ..Default::default()
        }
    }

    #[test]
    fn windows_close_by_a_later_probe_the_clock_or_flush_and_count_loss_and_late() {
        let mut h = PathHistograms::new(10_000, 500, vec![500, 1000], vec![100, 400]);
        assert!(h.add(&probe(1, 1_000, vec![(7, Some(1_300)), (8, None)])).is_none());
        assert!(h.add(&probe(4, 2_000, vec![(7, Some(2_050)), (8, None)])).is_none());
        let closed = h.add(&probe(5, 11_000, vec![(7, None), (8, None)])).expect("the first window closed");
        assert_eq!((closed.start, closed.count, closed.loss), (0, 2, 2));
        assert_eq!(closed.e2e.buckets, vec![0, 2, 0]);
        assert_eq!((closed.hops[0].min, closed.hops[0].max, closed.hops[0].sum), (Some(50), Some(300), 350));
        assert_eq!(closed.hops[0].buckets, vec![1, 1, 0]);
        assert_eq!(closed.hops[1].count(), 0); // the second midpoint has no time
        assert!(h.add(&probe(6, 3_000, vec![(7, None), (8, None)])).is_none());
        assert_eq!(h.late, 1);
        // the window [10000, 20000) is due at 20000 + lag 2000 + grace 500
        assert!(h.tick(22_499).is_empty());
        assert_eq!(h.tick(22_500).len(), 1);
        assert!(h.flush().is_empty());
    }
}
