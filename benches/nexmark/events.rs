//! Nexmark events from the `nexmark` crate's standard generator, as the JSON records Eddy's
//! topics hold and as JSON Lines files for Spark and DataFusion.

use std::io::Write;
use std::path::Path;

use nexmark::config::NexmarkConfig;
use nexmark::event::Event;
use nexmark::EventGenerator;
use serde_json::json;

/// 2026-01-01T00:00:00Z: a fixed base time, so every run sees the same events.
const BASE_TIME_MS: u64 = 1_767_225_600_000;

/// One event as a Kafka record: its topic, key (the id of a person or auction, KAFKA BIGINT)
/// and JSON value (whose `date_time` is the event time).
pub struct EventRecord {
    pub topic: &'static str,
    pub key: Option<[u8; 8]>,
    pub value: Vec<u8>,
}

/// The first `n` events of the standard generator (default config: 1 person : 3 auctions :
/// 46 bids, 10,000 events/s of event time), in generation order.
pub fn generate(n: usize) -> Vec<EventRecord> {
    let config = NexmarkConfig { base_time: BASE_TIME_MS, ..Default::default() };
    EventGenerator::new(config)
        .take(n)
        .map(|event| match event {
            Event::Person(p) => EventRecord {
                topic: "person",
                key: Some((p.id as i64).to_be_bytes()),
                value: json!({
                    "id": p.id, "name": p.name, "email_address": p.email_address,
                    "credit_card": p.credit_card, "city": p.city, "state": p.state,
                    "date_time": p.date_time, "extra": p.extra,
                })
                .to_string()
                .into_bytes(),
            },
            Event::Auction(a) => EventRecord {
                topic: "auction",
                key: Some((a.id as i64).to_be_bytes()),
                value: json!({
                    "id": a.id, "item_name": a.item_name, "description": a.description,
                    "initial_bid": a.initial_bid, "reserve": a.reserve, "date_time": a.date_time,
                    "expires": a.expires, "seller": a.seller, "category": a.category, "extra": a.extra,
                })
                .to_string()
                .into_bytes(),
            },
            Event::Bid(b) => EventRecord {
                topic: "bid",
                key: None,
                value: json!({
                    "auction": b.auction, "bidder": b.bidder, "price": b.price, "channel": b.channel,
                    "url": b.url, "date_time": b.date_time, "extra": b.extra,
                })
                .to_string()
                .into_bytes(),
            },
        })
        .collect()
}

/// Events per topic.
pub fn count(events: &[EventRecord], topic: &str) -> usize {
    events.iter().filter(|e| e.topic == topic).count()
}

/// Writes `<dir>/<topic>/part-00000.json` (JSON Lines) for each topic.
pub fn write_files(events: &[EventRecord], dir: &Path) -> std::io::Result<()> {
    for topic in ["person", "auction", "bid"] {
        let sub = dir.join(topic);
        if sub.exists() {
            std::fs::remove_dir_all(&sub)?;
        }
        std::fs::create_dir_all(&sub)?;
        let mut out = std::io::BufWriter::new(std::fs::File::create(sub.join("part-00000.json"))?);
        for e in events.iter().filter(|e| e.topic == topic) {
            out.write_all(&e.value)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    Ok(())
}
