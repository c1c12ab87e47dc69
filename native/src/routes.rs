//! A routed batch read by its routes: per rule its counts, per records output ("slot") its encoded records in
//! input order or per source node, the raw rules' records by position, and the histogram probes counted into
//! their rules' windows. The core routes each record as it decodes it (rules.rs); this reads the result.

use std::sync::atomic::Ordering;

use crate::core::Output;
use crate::path_histogram::Closed;
use crate::rules::{Kind, Rules, SAMPLED_OUT};

/// A batch's histogram probes counted into their rules' windows, once: the windows they closed, in order.
pub fn aggregate(rules: &Rules, out: &Output) -> Vec<(u32, Closed)> {
    if out.aggregated.swap(true, Ordering::Relaxed) || out.hist.is_empty() {
        return Vec::new();
    }
    let mut histograms = rules.histograms.lock().expect("not poisoned");
    let mut closed = Vec::new();
    for probe in &out.hist {
        let rule = probe.rule & !SAMPLED_OUT;
        if let Some((_, h)) = histograms.iter_mut().find(|(index, _)| *index == rule) {
            closed.extend(h.add(probe).map(|c| (rule, c)));
        }
    }
    closed
}

/// Whether a batch's record `i` goes to records output `slot` (the batch was routed: `out.routes` is full).
fn in_slot(out: &Output, rules: &Rules, i: usize, slot: u32) -> bool {
    let route = out.routes[i];
    route & SAMPLED_OUT == 0 && rules.slot(route as usize) == slot
}

/// Per rule (0 the default, then 1..), the probes it matched and the records it kept (not sampled out).
pub fn counts(out: &Output, rules: &Rules) -> Vec<(u64, u64)> {
    let mut counts = vec![(0u64, 0u64); rules.rules.len() + 1];
    for &route in &out.routes {
        let entry = &mut counts[(route & !SAMPLED_OUT) as usize];
        entry.0 += 1;
        entry.1 += u64::from(route & SAMPLED_OUT == 0);
    }
    counts
}

/// The byte span of each record (start, end) in `out.data`.
fn spans(out: &Output) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut start = 0;
    out.records.iter().map(move |(_, end, _)| {
        let span = (start, *end as usize);
        start = *end as usize;
        span
    })
}

/// The records of output `slot`, in input order, and how many (JSON lines, or msgpack elements back to back).
pub fn slot_data(out: &Output, rules: &Rules, slot: u32) -> (Vec<u8>, usize) {
    let mut data = Vec::new();
    let mut n = 0;
    for (i, (s, e)) in spans(out).enumerate() {
        if in_slot(out, rules, i, slot) {
            data.extend_from_slice(&out.data[s..e]);
            n += 1;
        }
    }
    (data, n)
}

/// Per source node, first seen first, its records' spans: of every record, or of output `slot`'s (the sources
/// in the order their first record of the slot came, as grouping that output's records would give them).
/// Each item: (index in `out.groups`, spans).
pub fn group_spans(out: &Output, rules: Option<&Rules>, slot: Option<u32>) -> Vec<(usize, Vec<(usize, usize)>)> {
    let (Some(slot), Some(rules)) = (slot, rules) else {
        let mut found: Vec<(usize, Vec<(usize, usize)>)> =
            out.groups.iter().enumerate().map(|(g, s)| (g, Vec::with_capacity(s.1 as usize))).collect();
        if slot.is_none() {
            for (i, span) in spans(out).enumerate() {
                found[out.records[i].0 as usize].1.push(span);
            }
        }
        return found;
    };
    let mut place = vec![u32::MAX; out.groups.len()];
    let mut found: Vec<(usize, Vec<(usize, usize)>)> = Vec::new();
    for (i, span) in spans(out).enumerate() {
        if in_slot(out, rules, i, slot) {
            let g = out.records[i].0 as usize;
            if place[g] == u32::MAX {
                place[g] = found.len() as u32;
                found.push((g, Vec::new()));
            }
            found[place[g] as usize].1.push(span);
        }
    }
    found
}

/// The records of raw rules (their frames are taken in Python), in input order: (position, rule index).
pub fn elsewhere(out: &Output, rules: &Rules) -> Vec<(u32, u32)> {
    let wanted: Vec<bool> = (0..=rules.rules.len()).map(|i| rules.kind(i) == Kind::Raw).collect();
    if !wanted.iter().any(|w| *w) {
        return Vec::new();
    }
    let mut found = Vec::new();
    for (i, &route) in out.routes.iter().enumerate() {
        let rule = route & !SAMPLED_OUT;
        if wanted[rule as usize] {
            found.push((i as u32, rule));
        }
    }
    found
}
