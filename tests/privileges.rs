//! Ownership and privileges (issue 15, item 3): with passwords on, the creator owns a stream
//! or table; others need GRANT SELECT / INSERT to read or write it, over Postgres and over
//! Kafka (SASL users); DROP, TERMINATE and GRANT take ownership or a superuser.

use std::path::Path;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::common::{python_output, query, sqlstate, Server};

fn start_with_password(dir: &Path) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("password");
    std::fs::write(&file, "adm1n-pw\n").unwrap();
    Server::start_with(&dir.join("data"), 0, &["--password-file", file.to_str().unwrap()])
}

async fn connect(port: u16, user: &str, password: &str) -> tokio_postgres::Client {
    let conninfo = format!("host=127.0.0.1 port={port} user={user} password={password} dbname=eddy");
    let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn sasl(bootstrap: &str, user: &str, password: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanisms", "PLAIN")
        .set("sasl.username", user)
        .set("sasl.password", password);
    c
}

async fn produce(config: &ClientConfig, topic: &str) -> Option<RDKafkaErrorCode> {
    let producer: FutureProducer =
        config.clone().set("message.timeout.ms", "5000").set("retries", "0").create().unwrap();
    let record = FutureRecord::<str, str>::to(topic).payload("{\"ID\":\"k\",\"AMOUNT\":1}");
    match producer.send(record, Duration::from_secs(10)).await {
        Ok(_) => None,
        Err((KafkaError::MessageProduction(code), _)) => Some(code),
        Err((e, _)) => panic!("produce to {topic}: {e}"),
    }
}

async fn delete_topic(config: &ClientConfig, topic: &str) -> Option<RDKafkaErrorCode> {
    let admin: AdminClient<DefaultClientContext> = config.create().unwrap();
    let res = admin.delete_topics(&[topic], &AdminOptions::new()).await.expect("DeleteTopics answered");
    res[0].as_ref().err().map(|(_, code)| *code)
}

fn queries_running(rows: &[Vec<Option<String>>]) -> usize {
    rows.iter().filter(|r| r[1].as_deref() == Some("RUNNING")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_and_grants_decide_who_reads_writes_drops_and_terminates() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_with_password(tmp.path());
    let admin = connect(server.port, "eddy", "adm1n-pw").await;
    query(&admin, "CREATE USER alice WITH PASSWORD 'a-pw'").await;
    query(&admin, "CREATE USER bob WITH PASSWORD 'b-pw'").await;
    query(&admin, "CREATE STREAM orders (id STRING, amount BIGINT) WITH (KAFKA_TOPIC='orders', PARTITIONS=1)").await;
    query(&admin, "CREATE TABLE totals AS SELECT id, SUM(amount) AS total FROM orders GROUP BY id EMIT CHANGES").await;
    let alice = connect(server.port, "alice", "a-pw").await;
    let bob = connect(server.port, "bob", "b-pw").await;

    // Not hers: no reading, writing, dropping or terminating.
    assert_eq!(sqlstate(&alice, "SELECT * FROM orders").await.0, "42501");
    assert_eq!(sqlstate(&alice, "SELECT * FROM totals").await.0, "42501");
    assert_eq!(sqlstate(&alice, "INSERT INTO orders (id, amount) VALUES ('a', 1)").await.0, "42501");
    assert_eq!(sqlstate(&alice, "DROP TABLE totals").await.0, "42501");
    assert_eq!(sqlstate(&alice, "DROP STREAM orders DELETE TOPIC").await.0, "42501");
    assert_eq!(sqlstate(&alice, "TERMINATE ALL").await.0, "42501");
    assert_eq!(sqlstate(&alice, "PAUSE ALL").await.0, "42501");
    assert_eq!(sqlstate(&alice, "ALTER SYSTEM 'auto.offset.reset' = 'earliest'").await.0, "42501");
    // The server reads a script's file: superusers only (as Postgres's COPY from a file).
    assert_eq!(sqlstate(&alice, "RUN SCRIPT '/etc/hostname'").await.0, "42501");
    assert_eq!(sqlstate(&alice, "GRANT SELECT ON orders TO alice").await.0, "42501");
    assert_eq!(
        sqlstate(&alice, "CREATE TABLE mine AS SELECT id, COUNT(*) AS n FROM orders GROUP BY id EMIT CHANGES").await.0,
        "42501"
    );
    assert_eq!(queries_running(&query(&admin, "SHOW QUERIES").await), 1, "TERMINATE ALL stopped nothing");

    // Over Kafka, the same user gets the same answers.
    let alice_kafka = sasl(&server.kafka, "alice", "a-pw");
    assert_eq!(produce(&alice_kafka, "orders").await, Some(RDKafkaErrorCode::TopicAuthorizationFailed));
    assert_eq!(delete_topic(&alice_kafka, "orders").await, Some(RDKafkaErrorCode::TopicAuthorizationFailed));

    // Granted, she reads and writes; revoked, she does not.
    query(&admin, "GRANT SELECT, INSERT ON STREAM orders TO alice").await;
    query(&alice, "INSERT INTO orders (id, amount) VALUES ('a', 5)").await;
    assert_eq!(produce(&alice_kafka, "orders").await, None);
    query(&alice, "FLUSH").await;
    assert_eq!(query(&alice, "SELECT COUNT(*) FROM orders").await, vec![vec![Some("2".to_string())]]);
    assert_eq!(sqlstate(&alice, "SELECT * FROM totals").await.0, "42501", "a grant on orders is not one on totals");
    assert_eq!(sqlstate(&bob, "SELECT * FROM orders").await.0, "42501", "a grant to alice is not one to bob");
    query(&admin, "REVOKE INSERT ON orders FROM alice").await;
    assert_eq!(sqlstate(&alice, "INSERT INTO orders (id, amount) VALUES ('a', 1)").await.0, "42501");
    assert_eq!(produce(&alice_kafka, "orders").await, Some(RDKafkaErrorCode::TopicAuthorizationFailed));

    // What she creates is hers: she may drop it and terminate its query; bob may not.
    query(&alice, "CREATE TABLE mine AS SELECT id, COUNT(*) AS n FROM orders GROUP BY id EMIT CHANGES").await;
    query(&alice, "FLUSH").await;
    assert_eq!(query(&alice, "SELECT n FROM mine").await.len(), 2);
    assert_eq!(sqlstate(&bob, "SELECT * FROM mine").await.0, "42501");
    assert_eq!(sqlstate(&bob, "DROP TABLE mine").await.0, "42501");
    let mine_query = query(&admin, "SHOW QUERIES")
        .await
        .into_iter()
        .filter_map(|r| r[0].clone())
        .find(|id| id.starts_with("CTAS_MINE"))
        .expect("her query");
    assert_eq!(sqlstate(&bob, &format!("TERMINATE {mine_query}")).await.0, "42501");
    query(&alice, "GRANT SELECT ON TABLE mine TO bob").await;
    assert_eq!(query(&bob, "SELECT n FROM mine").await.len(), 2);
    query(&alice, &format!("TERMINATE {mine_query}")).await;
    query(&alice, "DROP TABLE mine").await;

    // Kafka's DescribeAcls lists the grants as ACLs on the topics.
    let acls = python_output("kafka_acls.py", &[&server.kafka, "eddy", "adm1n-pw"]).await;
    assert!(acls.lines().any(|l| l == "orders User:alice READ ALLOW"), "{acls}");
    assert!(!acls.lines().any(|l| l == "orders User:alice WRITE ALLOW"), "revoked: {acls}");
    assert!(acls.lines().any(|l| l == "orders User:eddy WRITE ALLOW"), "the owner: {acls}");

    // Superusers may do anything; the Kafka admin gets the policy answer, not authorization.
    let admin_kafka = sasl(&server.kafka, "eddy", "adm1n-pw");
    assert_eq!(delete_topic(&admin_kafka, "orders").await, Some(RDKafkaErrorCode::PolicyViolation));
    query(&admin, "DROP TABLE totals").await;
    query(&admin, "DROP STREAM orders DELETE TOPIC").await;
}
