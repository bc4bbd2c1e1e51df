//! Request decoding, the part of the Kafka server that sees raw client bytes first.
//! Depends only on `kafka-protocol` and `bytes`, so the cargo-fuzz target in `fuzz/`
//! compiles this very file without building the rest of Eddy.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;

/// (API, lowest, highest) versions served. Produce 0–2 are advertised but refused when
/// used, as Kafka 4 does, because librdkafka otherwise stops compressing (its #4956).
pub const VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 10),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 2),
    (ApiKey::JoinGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 3),
    (ApiKey::LeaveGroup, 0, 1),
    (ApiKey::SyncGroup, 0, 3),
    (ApiKey::DescribeGroups, 0, 4),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 0, 4),
    (ApiKey::DeleteTopics, 0, 1),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 0, 1),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 1),
];

pub fn supported(key: ApiKey, version: i16) -> bool {
    VERSIONS.iter().any(|(k, lo, hi)| *k == key && (*lo..=*hi).contains(&version))
}

/// What the first bytes of a frame say.
pub struct FrameStart {
    pub key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
}

/// Reads api key, version and correlation id (a frame is at least 8 bytes long).
pub fn frame_start(frame: &[u8]) -> Result<FrameStart, String> {
    if frame.len() < 8 {
        return Err(format!("frame of {} bytes is shorter than a request header", frame.len()));
    }
    let api_key = (&frame[0..2]).get_i16();
    let version = (&frame[2..4]).get_i16();
    let correlation_id = (&frame[4..8]).get_i32();
    let key = ApiKey::try_from(api_key).map_err(|_| format!("unknown API key {api_key}"))?;
    Ok(FrameStart { key, version, correlation_id })
}

/// Decodes the request header, leaving `frame` at the body.
pub fn header(frame: &mut Bytes, start: &FrameStart) -> Result<RequestHeader, String> {
    RequestHeader::decode(frame, start.key.request_header_version(start.version))
        .map_err(|e| format!("request header: {e}"))
}

/// Decodes a whole request frame (header and body) the way the server does; used by the
/// fuzz target and its smoke test. Never panics on any input.
pub fn decode_request(frame: &[u8]) -> Result<(), String> {
    let start = frame_start(frame)?;
    if !supported(start.key, start.version) {
        return Err("unsupported version".into());
    }
    let mut buf = Bytes::copy_from_slice(frame);
    header(&mut buf, &start)?;
    let v = start.version;
    fn body<T: Decodable>(buf: &mut Bytes, v: i16) -> Result<(), String> {
        T::decode(buf, v).map(|_| ()).map_err(|e| e.to_string())
    }
    match start.key {
        ApiKey::Produce => body::<ProduceRequest>(&mut buf, v),
        ApiKey::Fetch => body::<FetchRequest>(&mut buf, v),
        ApiKey::ListOffsets => body::<ListOffsetsRequest>(&mut buf, v),
        ApiKey::Metadata => body::<MetadataRequest>(&mut buf, v),
        ApiKey::OffsetCommit => body::<OffsetCommitRequest>(&mut buf, v),
        ApiKey::OffsetFetch => body::<OffsetFetchRequest>(&mut buf, v),
        ApiKey::FindCoordinator => body::<FindCoordinatorRequest>(&mut buf, v),
        ApiKey::JoinGroup => body::<JoinGroupRequest>(&mut buf, v),
        ApiKey::Heartbeat => body::<HeartbeatRequest>(&mut buf, v),
        ApiKey::LeaveGroup => body::<LeaveGroupRequest>(&mut buf, v),
        ApiKey::SyncGroup => body::<SyncGroupRequest>(&mut buf, v),
        ApiKey::DescribeGroups => body::<DescribeGroupsRequest>(&mut buf, v),
        ApiKey::ListGroups => body::<ListGroupsRequest>(&mut buf, v),
        ApiKey::ApiVersions => body::<ApiVersionsRequest>(&mut buf, v),
        ApiKey::CreateTopics => body::<CreateTopicsRequest>(&mut buf, v),
        ApiKey::DeleteTopics => body::<DeleteTopicsRequest>(&mut buf, v),
        ApiKey::InitProducerId => body::<InitProducerIdRequest>(&mut buf, v),
        ApiKey::DescribeConfigs => body::<DescribeConfigsRequest>(&mut buf, v),
        ApiKey::SaslHandshake => body::<SaslHandshakeRequest>(&mut buf, v),
        ApiKey::SaslAuthenticate => body::<SaslAuthenticateRequest>(&mut buf, v),
        _ => Err("not served".into()),
    }
}
