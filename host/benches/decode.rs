//! JSON lines → Arrow: the host's decoder against arrow-json on the same generated EventSim
//! records, in one run (`cargo bench -p sluice --bench decode [-- EVENTS]`). Prints events/s,
//! MB/s and the ratio, medians of 7 passes per decoder, passes alternating. Timings go to the
//! terminal, never into an assertion.
use sluice::decode::JsonDecoder;
use sluice::decode::schema::Schemas;
use sluice::source::RawBatch;
use sluice::source::generator::{EventGenerator, GeneratorConfig};
use std::time::Instant;

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this as a quick smoke test.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let events: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if benchmarking { 400_000 } else { 5_000 });
    let mut generator = EventGenerator::new(&GeneratorConfig {
        events,
        ..Default::default()
    });
    // Batches of 8192 records per topic, as the pipeline decodes them.
    let mut open: std::collections::BTreeMap<&str, RawBatch> = Default::default();
    let mut batches = Vec::new();
    let mut offset = 0;
    while let Some((topic, record)) = generator.next_record() {
        let batch = open
            .entry(topic.name())
            .or_insert_with(|| RawBatch::new(topic.name(), "bench"));
        batch.push(&record, offset);
        offset += 1;
        if batch.len() == 8192 {
            batches.push(open.remove(topic.name()).expect("just used"));
        }
    }
    batches.extend(open.into_values());
    let bytes: usize = batches.iter().map(|b| b.data.len()).sum();
    let schemas = Schemas::from_config(&sluice::config::SchemasConfig {
        builtin: Some("eventsim".into()),
        topics: Default::default(),
    })
    .expect("the built-in schemas");

    let mut flat = JsonDecoder::new(schemas.clone());
    let mut arrow_json = JsonDecoder::arrow_json_only(schemas);
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..7 {
        for (i, decoder) in [&mut flat, &mut arrow_json].into_iter().enumerate() {
            let started = Instant::now();
            let mut rows = 0;
            for batch in &batches {
                rows += decoder.decode(batch).batch.map_or(0, |b| b.num_rows());
            }
            assert_eq!(rows as u64, events, "every record decodes");
            times[i].push(started.elapsed().as_secs_f64());
        }
    }
    let median = |t: &mut Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let (ours, theirs) = (median(&mut times[0]), median(&mut times[1]));
    for (name, seconds) in [("flat_json (host)", ours), ("arrow-json", theirs)] {
        println!(
            "{name:<18} {:>12.0} events/s {:>8.0} MB/s  ({events} events, {:.1} MB, median of 7)",
            events as f64 / seconds,
            bytes as f64 / seconds / 1e6,
            bytes as f64 / 1e6
        );
    }
    println!("flat_json / arrow-json = {:.2}x", theirs / ours);
}
