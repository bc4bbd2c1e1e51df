//! The bytes Kafka consumers put in JoinGroup and SyncGroup (protocol type `consumer`): a
//! member's subscription, a member's assignment, and the two classic assignors a group
//! leader runs, `range` and `roundrobin`, as Kafka's clients define them.
//!
//! The broker passes these bytes through; members that are part of the server (the REST
//! Proxy's consumer instances) need them to join a group beside librdkafka consumers, and
//! to assign its partitions when they lead it.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};

/// A subscription to `topics`, in version 0 (every client reads it).
pub fn encode_subscription(topics: &[String]) -> Bytes {
    let mut s = ConsumerProtocolSubscription::default();
    s.topics = topics.iter().map(|t| StrBytes::from_string(t.clone())).collect();
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    // Version 0 of a message with only strings and nullable bytes cannot fail to encode.
    let _ = s.encode(&mut buf, 0);
    buf.freeze()
}

/// Reads the fields every version starts with, checking each length against the bytes left
/// (a count read off the wire never sizes an allocation by itself).
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn i16(&mut self) -> Option<i16> {
        let (b, rest) = self.0.split_first_chunk::<2>()?;
        self.0 = rest;
        Some(i16::from_be_bytes(*b))
    }

    fn i32(&mut self) -> Option<i32> {
        let (b, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(i32::from_be_bytes(*b))
    }

    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(s.to_vec()).ok()
    }

    /// An array's count, when the bytes left could hold that many items of `min_size` bytes.
    fn count(&mut self, min_size: usize) -> Option<usize> {
        let n = usize::try_from(self.i32()?).ok()?;
        (n.saturating_mul(min_size) <= self.0.len()).then_some(n)
    }
}

/// The topics of a member's subscription; `None` when the bytes are not a subscription. Every
/// version begins with the version and the topics; later fields are not needed here.
pub fn decode_subscription(bytes: &[u8]) -> Option<Vec<String>> {
    let mut r = Reader(bytes);
    r.i16().filter(|v| *v >= 0)?;
    let n = r.count(2)?;
    (0..n).map(|_| r.string()).collect()
}

/// An assignment of `partitions` (topic, partition), in version 0.
pub fn encode_assignment(partitions: &[(String, i32)]) -> Bytes {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in partitions {
        by_topic.entry(t).or_default().push(*p);
    }
    let mut a = ConsumerProtocolAssignment::default();
    a.assigned_partitions = by_topic
        .into_iter()
        .map(|(t, ps)| {
            let mut tp = TopicPartition::default();
            tp.topic = TopicName(StrBytes::from_string(t.to_string()));
            tp.partitions = ps;
            tp
        })
        .collect();
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    let _ = a.encode(&mut buf, 0);
    buf.freeze()
}

/// The partitions of an assignment, sorted; empty bytes (no assignment) give none.
pub fn decode_assignment(bytes: &[u8]) -> Result<Vec<(String, i32)>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let bad = || "a consumer assignment that does not decode".to_string();
    let mut r = Reader(bytes);
    r.i16().filter(|v| *v >= 0).ok_or_else(bad)?;
    let mut out = Vec::new();
    for _ in 0..r.count(6).ok_or_else(bad)? {
        let topic = r.string().ok_or_else(bad)?;
        for _ in 0..r.count(4).ok_or_else(bad)? {
            out.push((topic.clone(), r.i32().ok_or_else(bad)?));
        }
    }
    out.sort();
    Ok(out)
}

/// What a group leader hands each member: `members` are (member id, subscription bytes),
/// `partitions_of` gives a topic's partition count (None: the topic does not exist, and is
/// left out). `protocol` is the one the coordinator chose: `roundrobin`, else `range`.
pub fn assign(
    protocol: Option<&str>,
    members: &[(String, Bytes)],
    partitions_of: impl Fn(&str) -> Option<i32>,
) -> Vec<(String, Bytes)> {
    let subscriptions: BTreeMap<&str, BTreeSet<String>> = members
        .iter()
        .map(|(id, meta)| (id.as_str(), decode_subscription(meta).unwrap_or_default().into_iter().collect()))
        .collect();
    let topics: BTreeSet<&String> = subscriptions.values().flatten().collect();
    let mut assigned: BTreeMap<&str, Vec<(String, i32)>> = subscriptions.keys().map(|id| (*id, Vec::new())).collect();
    if protocol == Some("roundrobin") {
        // Every partition of every topic in order, dealt to the members in turn, skipping
        // members not subscribed to its topic.
        let ids: Vec<&str> = subscriptions.keys().copied().collect();
        let mut turn = 0usize;
        for topic in &topics {
            for p in 0..partitions_of(topic).unwrap_or(0) {
                for _ in 0..ids.len() {
                    let id = ids[turn % ids.len()];
                    turn += 1;
                    if subscriptions[id].contains(*topic) {
                        assigned.entry(id).or_default().push(((*topic).clone(), p));
                        break;
                    }
                }
            }
        }
    } else {
        // Per topic, its subscribers in member-id order take consecutive ranges; the first
        // `partitions % members` take one more.
        for topic in &topics {
            let n = partitions_of(topic).unwrap_or(0).max(0) as usize;
            let subscribers: Vec<&str> =
                subscriptions.iter().filter(|(_, t)| t.contains(*topic)).map(|(id, _)| *id).collect();
            let m = subscribers.len().max(1);
            let (per, extra) = (n / m, n % m);
            for (i, id) in subscribers.iter().enumerate() {
                let start = per * i + i.min(extra);
                let len = per + usize::from(i < extra);
                for p in start..start + len {
                    assigned.entry(id).or_default().push(((*topic).clone(), p as i32));
                }
            }
        }
    }
    assigned.into_iter().map(|(id, parts)| (id.to_string(), encode_assignment(&parts))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(subs: &[(&str, &[&str])]) -> Vec<(String, Bytes)> {
        subs.iter()
            .map(|(id, topics)| {
                (id.to_string(), encode_subscription(&topics.iter().map(|t| t.to_string()).collect::<Vec<_>>()))
            })
            .collect()
    }

    fn decoded(out: &[(String, Bytes)]) -> BTreeMap<String, Vec<(String, i32)>> {
        out.iter().map(|(id, b)| (id.clone(), decode_assignment(b).unwrap())).collect()
    }

    #[test]
    fn subscriptions_and_assignments_round_trip() {
        let s = encode_subscription(&["a".into(), "b".into()]);
        assert_eq!(&s[..2], &[0, 0]);
        assert_eq!(decode_subscription(&s), Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(decode_subscription(&[0]), None);
        let a = encode_assignment(&[("b".into(), 1), ("a".into(), 0), ("b".into(), 0)]);
        assert_eq!(decode_assignment(&a).unwrap(), vec![("a".into(), 0), ("b".into(), 0), ("b".into(), 1)]);
        assert_eq!(decode_assignment(&[]).unwrap(), vec![]);
        assert!(decode_assignment(&[0, 0, 0]).is_err());
    }

    #[test]
    fn range_gives_the_first_members_the_extra_partitions() {
        let out = assign(Some("range"), &members(&[("m2", &["t"]), ("m1", &["t", "u"])]), |t| match t {
            "t" => Some(3),
            "u" => Some(1),
            _ => None,
        });
        let d = decoded(&out);
        assert_eq!(d["m1"], vec![("t".to_string(), 0), ("t".to_string(), 1), ("u".to_string(), 0)]);
        assert_eq!(d["m2"], vec![("t".to_string(), 2)]);
    }

    #[test]
    fn roundrobin_deals_partitions_to_subscribers_in_turn() {
        let out = assign(Some("roundrobin"), &members(&[("a", &["t"]), ("b", &["t"]), ("c", &["x"])]), |t| match t {
            "t" => Some(4),
            _ => None,
        });
        let d = decoded(&out);
        assert_eq!(d["a"], vec![("t".to_string(), 0), ("t".to_string(), 2)]);
        assert_eq!(d["b"], vec![("t".to_string(), 1), ("t".to_string(), 3)]);
        assert_eq!(d["c"], vec![]);
    }
}
