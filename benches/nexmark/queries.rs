//! The Nexmark sources and queries in Eddy's SQL, and which could not be written.

/// The fields of each event type, as the event files and topics hold them: name, and whether
/// it is a BIGINT (else STRING). `date_time` is the event time, in epoch milliseconds.
pub const EVENT_FIELDS: &[(&str, &[(&str, bool)])] = &[
    (
        "person",
        &[
            ("id", true),
            ("name", false),
            ("email_address", false),
            ("credit_card", false),
            ("city", false),
            ("state", false),
            ("date_time", true),
            ("extra", false),
        ],
    ),
    (
        "auction",
        &[
            ("id", true),
            ("item_name", false),
            ("description", false),
            ("initial_bid", true),
            ("reserve", true),
            ("date_time", true),
            ("expires", true),
            ("seller", true),
            ("category", true),
            ("extra", false),
        ],
    ),
    (
        "bid",
        &[
            ("auction", true),
            ("bidder", true),
            ("price", true),
            ("channel", false),
            ("url", false),
            ("date_time", true),
            ("extra", false),
        ],
    ),
];

/// The source relations over the three event topics: a stream per event type, and tables
/// `person_t` and `auction_t` sharing the person and auction topics, whose records are keyed
/// by their id (KAFKA BIGINT key). Each topic has `EDDY_NEXMARK_PARTITIONS` partitions (1
/// unless set; bids, unkeyed, go to a random one).
pub fn sources() -> Vec<String> {
    let partitions: u32 = std::env::var("EDDY_NEXMARK_PARTITIONS").ok().and_then(|p| p.parse().ok()).unwrap_or(1);
    let mut out = Vec::new();
    for (topic, fields) in EVENT_FIELDS {
        let columns = |key: Option<&str>| {
            fields
                .iter()
                .map(|(name, bigint)| {
                    let ty = if *bigint { "BIGINT" } else { "STRING" };
                    let primary = if key == Some(*name) { " PRIMARY KEY" } else { "" };
                    format!("{name} {ty}{primary}")
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let with = format!("KAFKA_TOPIC='{topic}', VALUE_FORMAT='JSON', TIMESTAMP='date_time'");
        out.push(format!("CREATE STREAM {topic} ({}) WITH ({with}, PARTITIONS={partitions})", columns(None)));
        if *topic != "bid" {
            out.push(format!("CREATE TABLE {topic}_t ({}) WITH ({with})", columns(Some("id"))));
        }
    }
    out
}

/// One Nexmark query: the statements that start it (a chain when it has two stages), the
/// topics it reads, and its one-pass batch form for DataFusion when it has one.
pub struct Query {
    pub name: &'static str,
    pub statements: &'static [&'static str],
    /// Event topics read: the events counted for its throughput.
    pub reads: &'static [&'static str],
    /// The relation holding the result.
    pub output: &'static str,
    /// The same query as one batch over the event files (stateless queries only).
    pub batch: Option<&'static str>,
    /// How it differs from the standard Nexmark query.
    pub note: &'static str,
}

pub const QUERIES: &[Query] = &[
    Query {
        name: "q0",
        statements: &["CREATE STREAM nx_q0 AS SELECT auction, bidder, price, date_time, extra FROM bid EMIT CHANGES"],
        reads: &["bid"],
        output: "nx_q0",
        batch: Some("SELECT auction, bidder, price, date_time, extra FROM bid"),
        note: "pass-through",
    },
    Query {
        name: "q1",
        statements: &[
            "CREATE STREAM nx_q1 AS SELECT auction, bidder, price * 0.908 AS price, date_time, extra FROM bid EMIT CHANGES",
        ],
        reads: &["bid"],
        output: "nx_q1",
        batch: Some("SELECT auction, bidder, price * 0.908 AS price, date_time, extra FROM bid"),
        note: "currency conversion",
    },
    Query {
        name: "q2",
        statements: &["CREATE STREAM nx_q2 AS SELECT auction, price FROM bid WHERE auction % 123 = 0 EMIT CHANGES"],
        reads: &["bid"],
        output: "nx_q2",
        batch: Some("SELECT auction, price FROM bid WHERE auction % 123 = 0"),
        note: "filter (auction % 123 = 0, as RisingWave and Arroyo run it)",
    },
    Query {
        name: "q3",
        statements: &["CREATE STREAM nx_q3 AS SELECT p.name AS name, p.city AS city, p.state AS state, a.id AS id \
             FROM auction a JOIN person_t p ON a.seller = p.id \
             WHERE a.category = 10 AND (p.state = 'or' OR p.state = 'id' OR p.state = 'ca') EMIT CHANGES"],
        reads: &["person", "auction"],
        output: "nx_q3",
        batch: Some(
            "SELECT p.name, p.city, p.state, a.id FROM auction a JOIN person p ON a.seller = p.id \
             WHERE a.category = 10 AND (p.state = 'or' OR p.state = 'id' OR p.state = 'ca')",
        ),
        note: "auction stream joined with the person table (the generator's states are lower case)",
    },
    Query {
        name: "q4",
        statements: &[
            "CREATE TABLE nx_q4_max AS SELECT a.id AS id, a.category AS category, MAX(b.price) AS final \
             FROM bid b JOIN auction_t a ON b.auction = a.id \
             WHERE b.date_time BETWEEN a.date_time AND a.expires GROUP BY a.id, a.category EMIT CHANGES",
            "CREATE TABLE nx_q4 AS SELECT category, AVG(final) AS avg_price FROM nx_q4_max GROUP BY category EMIT CHANGES",
        ],
        reads: &["auction", "bid"],
        output: "nx_q4",
        batch: Some(
            "SELECT category, AVG(final) FROM (SELECT a.id, a.category, MAX(b.price) AS final FROM bid b \
             JOIN auction a ON b.auction = a.id WHERE b.date_time BETWEEN a.date_time AND a.expires \
             GROUP BY a.id, a.category) q GROUP BY category",
        ),
        note: "two chained queries: winning bid per auction (bid stream joined with the auction table), then \
               the average per category over that table, with retractions",
    },
    Query {
        name: "q5",
        statements: &["CREATE TABLE nx_q5 AS SELECT auction, COUNT(*) AS num FROM bid \
             WINDOW HOPPING (SIZE 10 SECONDS, ADVANCE BY 2 SECONDS) GROUP BY auction EMIT CHANGES"],
        reads: &["bid"],
        output: "nx_q5",
        batch: None,
        note: "bids per auction per hopping window (10 s, every 2 s); the standard query's last step, \
               keeping only each window's top auction, is not included",
    },
    Query {
        name: "q7",
        statements: &["CREATE TABLE nx_q7 AS SELECT 1 AS w, MAX(price) AS maxprice FROM bid \
             WINDOW TUMBLING (SIZE 10 SECONDS) GROUP BY 1 EMIT CHANGES"],
        reads: &["bid"],
        output: "nx_q7",
        batch: None,
        note: "highest price per 10 s tumbling window; the join back to the bids holding it is not included",
    },
    Query {
        name: "q8",
        statements: &["CREATE STREAM nx_q8 AS SELECT p.id AS id, p.name AS name, a.reserve AS reserve \
             FROM person p JOIN auction a WITHIN 10 SECONDS GRACE PERIOD 4 SECONDS ON p.id = a.seller EMIT CHANGES"],
        reads: &["person", "auction"],
        output: "nx_q8",
        batch: None,
        note: "new people who opened an auction within 10 s (a stream-stream interval join rather than two \
               tumbling-window aggregations joined); GRACE PERIOD 4 SECONDS is the standard Nexmark watermark \
               delay (Flink's DDL: dateTime - 4 s). The generator's events are in order, so the result is the \
               same as with ksqlDB's 24 h default grace, which would keep every record for a day",
    },
    Query {
        name: "q11",
        statements: &["CREATE TABLE nx_q11 AS SELECT bidder, COUNT(*) AS bid_count FROM bid \
             WINDOW SESSION (10 SECONDS) GROUP BY bidder EMIT CHANGES"],
        reads: &["bid"],
        output: "nx_q11",
        batch: None,
        note: "bids per bidder per session (10 s gap)",
    },
    Query {
        name: "q14",
        statements: &["CREATE STREAM nx_q14 AS SELECT auction, bidder, 0.908 * price AS price, \
             CASE WHEN EXTRACT(HOUR FROM TO_TIMESTAMP_MILLIS(date_time)) BETWEEN 8 AND 18 THEN 'dayTime' \
             WHEN EXTRACT(HOUR FROM TO_TIMESTAMP_MILLIS(date_time)) <= 6 \
             OR EXTRACT(HOUR FROM TO_TIMESTAMP_MILLIS(date_time)) >= 20 THEN 'nightTime' \
             ELSE 'otherTime' END AS bid_time_type, date_time, extra, \
             LENGTH(extra) - LENGTH(REPLACE(extra, 'c', '')) AS c_counts FROM bid \
             WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000 EMIT CHANGES"],
        reads: &["bid"],
        output: "nx_q14",
        batch: Some(
            "SELECT auction, bidder, 0.908 * price AS price, \
             CASE WHEN EXTRACT(HOUR FROM TO_TIMESTAMP_MILLIS(date_time)) BETWEEN 8 AND 18 THEN 'dayTime' \
             WHEN EXTRACT(HOUR FROM TO_TIMESTAMP_MILLIS(date_time)) <= 6 \
             OR EXTRACT(HOUR FROM TO_TIMESTAMP_MILLIS(date_time)) >= 20 THEN 'nightTime' \
             ELSE 'otherTime' END AS bid_time_type, date_time, extra, \
             LENGTH(extra) - LENGTH(REPLACE(extra, 'c', '')) AS c_counts FROM bid \
             WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000",
        ),
        note: "calculation: CASE on the hour, a character count instead of the UDF",
    },
    Query {
        name: "q17",
        statements: &["CREATE TABLE nx_q17 AS SELECT auction, COUNT(*) AS total_bids, MIN(price) AS min_price, \
             MAX(price) AS max_price, AVG(price) AS avg_price, SUM(price) AS sum_price FROM bid \
             WINDOW TUMBLING (SIZE 1 DAY) GROUP BY auction EMIT CHANGES"],
        reads: &["bid"],
        output: "nx_q17",
        batch: None,
        note: "auction statistics per day (the per-price-range FILTER counts are left out)",
    },
    Query {
        name: "q18",
        statements: &["CREATE TABLE nx_q18 AS SELECT bidder, auction, LATEST_BY_OFFSET(price) AS price, \
             LATEST_BY_OFFSET(date_time) AS date_time FROM bid GROUP BY bidder, auction EMIT CHANGES"],
        reads: &["bid"],
        output: "nx_q18",
        batch: None,
        note: "last bid per bidder and auction (LATEST_BY_OFFSET instead of ROW_NUMBER)",
    },
    Query {
        name: "q19",
        statements: &["CREATE TABLE nx_q19 AS SELECT auction, TOPK(price, 10) AS top_prices FROM bid \
             GROUP BY auction EMIT CHANGES"],
        reads: &["bid"],
        output: "nx_q19",
        batch: None,
        note: "top 10 prices per auction (TOPK instead of ROW_NUMBER)",
    },
    Query {
        name: "q20",
        statements: &["CREATE STREAM nx_q20 AS SELECT b.auction AS auction, b.bidder AS bidder, b.price AS price, \
             b.channel AS channel, a.item_name AS item_name, a.category AS category \
             FROM bid b JOIN auction_t a ON b.auction = a.id WHERE a.category = 10 EMIT CHANGES"],
        reads: &["auction", "bid"],
        output: "nx_q20",
        batch: Some(
            "SELECT b.auction, b.bidder, b.price, b.channel, a.item_name, a.category \
             FROM bid b JOIN auction a ON b.auction = a.id WHERE a.category = 10",
        ),
        note: "bids joined with the auction table, one category",
    },
    Query {
        name: "q21",
        statements: &["CREATE STREAM nx_q21 AS SELECT auction, bidder, price, channel, \
             CASE LOWER(channel) WHEN 'apple' THEN '0' WHEN 'google' THEN '1' WHEN 'facebook' THEN '2' \
             WHEN 'baidu' THEN '3' ELSE REGEXP_REPLACE(url, '.*(&|^|\\?)channel_id=([^&]*).*', '\\2') END \
             AS channel_id FROM bid EMIT CHANGES"],
        reads: &["bid"],
        output: "nx_q21",
        batch: Some(
            "SELECT auction, bidder, price, channel, \
             CASE LOWER(channel) WHEN 'apple' THEN '0' WHEN 'google' THEN '1' WHEN 'facebook' THEN '2' \
             WHEN 'baidu' THEN '3' ELSE REGEXP_REPLACE(url, '.*(&|^|\\?)channel_id=([^&]*).*', '\\2') END \
             AS channel_id FROM bid",
        ),
        note: "channel id from a CASE and a regular expression",
    },
    Query {
        name: "q22",
        statements: &["CREATE STREAM nx_q22 AS SELECT auction, bidder, price, channel, \
             SPLIT_PART(url, '/', 4) AS dir1, SPLIT_PART(url, '/', 5) AS dir2, SPLIT_PART(url, '/', 6) AS dir3 \
             FROM bid EMIT CHANGES"],
        reads: &["bid"],
        output: "nx_q22",
        batch: Some(
            "SELECT auction, bidder, price, channel, SPLIT_PART(url, '/', 4) AS dir1, \
             SPLIT_PART(url, '/', 5) AS dir2, SPLIT_PART(url, '/', 6) AS dir3 FROM bid",
        ),
        note: "url split into directories",
    },
];

/// The standard queries Eddy's dialect cannot express yet, and why.
pub const NOT_RUN: &[(&str, &str)] = &[
    ("q6", "average selling price over each seller's last 10 closed auctions needs a ROWS window (OVER), not in the dialect"),
    ("q9", "winning bid per auction needs ROW_NUMBER() OVER over a join, not in the dialect"),
    ("q10", "writes to a partitioned file system sink; Eddy has no file sinks"),
    ("q12", "processing-time windows: Eddy windows on event or record time only"),
    ("q13", "joins a bounded side input read from a file; no file sources"),
    ("q15", "COUNT(DISTINCT ...) FILTER (WHERE ...) per day: FILTER clauses are not in the dialect"),
    ("q16", "per-channel statistics with FILTER clauses, as q15"),
];
