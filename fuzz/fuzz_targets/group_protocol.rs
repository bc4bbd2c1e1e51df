//! Fuzzes the consumer-group protocol bytes Eddy reads itself (`kafka::consumer_protocol`:
//! what a REST Proxy consumer instance decodes from other members when it leads a group, and
//! from the leader's assignment): any bytes decode to topics or an error, never a panic, and
//! the assignors hand out each partition of a subscribed topic exactly once.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/kafka/consumer_protocol.rs"]
#[allow(dead_code)]
mod consumer_protocol;

fuzz_target!(|data: &[u8]| {
    let _ = consumer_protocol::decode_assignment(data);
    let _ = consumer_protocol::decode_subscription(data);
    // Members: the input split in up to four subscriptions (raw bytes, as a leader gets them).
    let members: Vec<(String, bytes::Bytes)> = data
        .chunks(data.len().div_ceil(4).max(1))
        .enumerate()
        .map(|(i, c)| (format!("m{i}"), bytes::Bytes::copy_from_slice(c)))
        .collect();
    for protocol in ["range", "roundrobin"] {
        let out = consumer_protocol::assign(Some(protocol), &members, |t| Some((t.len() % 7) as i32));
        let mut seen = std::collections::BTreeSet::new();
        for (_, bytes) in &out {
            for tp in consumer_protocol::decode_assignment(bytes).expect("the assignors write valid assignments") {
                assert!(seen.insert(tp), "a partition assigned twice");
            }
        }
    }
});
