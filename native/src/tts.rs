//! Midpoint time reconstruction: the exact twin of `pt_collector/tts.py` (integer arithmetic,
//! floor division as Python's `//` and `%`).

const NS_PER_S: i64 = 1_000_000_000;
pub const MAX_SHIFT: i64 = 24;

/// The one window start c for `tts` with c <= upper whose window ends after lower; None when none or several fit.
pub fn window_start(tts: u8, shift: u32, lower: i64, upper: i64) -> Option<i64> {
    let first = (tts as i64) << shift;
    if first >= NS_PER_S {
        return None;
    }
    let width = 1i64 << shift;
    let (period, per) = (1i64 << (shift + 8), shift + 8); // floor division by the period is `>> per`
    let last_k = (NS_PER_S - 1 - first) >> per;
    let mut base = upper - upper.rem_euclid(NS_PER_S);
    let n = upper - base;
    let k = if n >= first {
        (n - first) >> per
    } else {
        base -= NS_PER_S;
        last_k
    };
    let latest = base + first + k * period;
    if (latest + width).min(base + NS_PER_S) <= lower {
        return None;
    }
    let before_end =
        if k != 0 { latest - period + width } else { (base - NS_PER_S + first + last_k * period + width).min(base) };
    if before_end > lower {
        None
    } else {
        Some(latest)
    }
}

/// Times for hops in path order (`tts_path`), reconstructed from the sink backwards into `times`.
pub fn midpoint_times(tts_path: &[u8], shift: u32, src_ns: i64, sink_ns: i64, times: &mut Vec<Option<i64>>) {
    times.clear();
    times.resize(tts_path.len(), None);
    let mut upper = sink_ns;
    for i in (0..tts_path.len()).rev() {
        match window_start(tts_path[i], shift, src_ns, upper) {
            None => break,
            Some(c) => {
                times[i] = Some(c);
                upper = c;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t64(word: u64) -> i64 {
        ((word >> 32) * 1_000_000_000 + (word & 0xFFFF_FFFF)) as i64
    }

    #[test]
    fn the_testbed_probe_reconstructs_to_the_published_midpoints() {
        // pt-wire-format.md section 5, third row: all three TTS 184, shift 18.
        let (src, sink) = (t64(7057539335188787818), t64(7057539335209112773));
        let mut times = Vec::new();
        midpoint_times(&[184, 184, 184], 18, src, sink, &mut times);
        let mid = t64(7057539335198867456);
        assert_eq!(mid, 1643211426 * 1_000_000_000 + 115343360);
        assert_eq!(times[2], Some(mid));
        assert_eq!(mid - src, 10_079_638);
        assert_eq!(sink - mid, 10_245_317);
        assert_eq!(sink - src, 20_324_955);
        // three hops in the same 2^18 ns window can't be told apart from windows 2^26 ns earlier? they can: unique
        assert!(times.iter().all(|t| *t == Some(mid)));
    }

    #[test]
    fn an_ambiguous_window_gives_none_and_so_do_the_hops_before() {
        // source 1 s before the sink: at shift 8 a TTS window repeats every 65536 ns, so it is not unique
        let mut times = Vec::new();
        midpoint_times(&[1, 2], 8, 0, 1_000_000_000, &mut times);
        assert_eq!(times, vec![None, None]);
    }

    #[test]
    fn a_window_past_the_second_is_none() {
        assert_eq!(window_start(255, 24, 0, 5_000_000_000), None); // 255 << 24 > 10^9
    }
}
