//! Decode and encode a whole capture with the core alone (no Python): the engine's own speed, and a
//! target for profilers. `cargo run --release --example decode_file -- FILE [json|msgpack] [SHIFT] [ROUNDS]`
//! (e.g. under `valgrind --tool=callgrind`).

use std::time::Instant;

use _native::core::{Core, Format, Output};
use _native::pcap::Reader;

/// CPU time of this thread so far (Linux: /proc/thread-self/schedstat), else None (wall time is used).
fn cpu_s() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(text.split_whitespace().next()?.parse::<f64>().ok()? / 1e9)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: decode_file FILE [json|msgpack] [SHIFT] [ROUNDS]");
    let format = if args.get(2).map(String::as_str) == Some("msgpack") { Format::Msgpack } else { Format::Json };
    let shift = args.get(3).map(|s| s.parse::<i64>().expect("a shift"));
    let rounds: usize = args.get(4).map_or(1, |s| s.parse().expect("a count"));
    let data = std::fs::read(path).expect("readable");
    let mut core = Core::new(shift, &[], format).expect("a shift in 0..=24");
    let (mut probes, mut bytes) = (0, 0);
    let (started, cpu_started) = (Instant::now(), cpu_s().unwrap_or(0.0));
    for _ in 0..rounds {
        let mut reader = Reader::default();
        let mut at = 0;
        loop {
            let mut out = Output::with_capacity(4096, format);
            let mut index = 0;
            while index < 4096 {
                match reader.next(&data, &mut at, true) {
                    Ok(Some(f)) => core.decode(&mut out, &data[f.start..f.end], f.capture_ns, f.linktype, index),
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("{path}: {e}");
                        break;
                    }
                }
                index += 1;
            }
            probes += out.decoded();
            bytes += out.data.len();
            if index < 4096 {
                break;
            }
        }
    }
    let elapsed = cpu_s().map_or_else(|| started.elapsed().as_secs_f64(), |end| end - cpu_started);
    println!(
        "{probes} probes, {:.0} B each, {:.0} probes/s, {:.0} ns each (CPU time)",
        bytes as f64 / probes as f64,
        probes as f64 / elapsed,
        elapsed * 1e9 / probes as f64
    );
}
