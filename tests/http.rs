//! The HTTP endpoint (REST Proxy v2/v3, ksqlDB's REST API) driven by real clients:
//! requests, httpx over HTTP/1.1 and HTTP/2, the PyPI `ksql` client, and librdkafka reading
//! what HTTP wrote (tests/python/http_clients.py).

use crate::common::{python, query, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_proxy_v2_and_v3_with_requests_httpx_and_librdkafka() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(tmp.path(), 0, &["--http-max-body-bytes", "262144"]);
    python("http_clients.py", &[server.http.clone(), server.kafka.clone(), "rest".into()]).await;
    // What HTTP produced is in the log SQL reads.
    let c = server.client().await;
    query(&c, "CREATE STREAM events (i INT) WITH (KAFKA_TOPIC='events', VALUE_FORMAT='JSON')").await;
    let rows = query(&c, "SELECT i FROM events WHERE i IS NOT NULL").await;
    assert_eq!(rows.len(), 5, "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ksqldb_rest_api_with_the_ksql_client_and_httpx_http2() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    python("http_clients.py", &[server.http.clone(), server.kafka.clone(), "ksql".into()]).await;
    // The table /ksql created is the one SQL sees.
    let c = server.client().await;
    let rows = query(&c, "SELECT userid, n FROM views_per_user ORDER BY userid").await;
    assert_eq!(rows.first().and_then(|r| r[0].clone()).as_deref(), Some("u0"), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_basic_auth_when_passwords_are_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("password");
    std::fs::write(&file, "h77p-pw\n").unwrap();
    let server = Server::start_with(&tmp.path().join("data"), 0, &["--password-file", file.to_str().unwrap()]);
    python("http_clients.py", &[server.http.clone(), server.kafka.clone(), "auth".into(), "h77p-pw".into()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scraped_with_prometheus_client_move_with_the_work() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let port = server.port.to_string();
    python("http_clients.py", &[server.http.clone(), server.kafka.clone(), "metrics".into(), port]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_registry_with_confluent_kafkas_avro_serializer_and_its_own_port() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(tmp.path(), 0, &["--schema-registry-listen", "127.0.0.1:0"]);
    let registry = server.registry.clone().expect("the banner names the registry's own port");
    python("http_clients.py", &[server.http.clone(), server.kafka.clone(), "registry".into(), registry]).await;
    // Subjects, versions and levels are durable.
    server.kill9();
    let server = Server::start(tmp.path());
    python("http_clients.py", &[server.http.clone(), server.kafka.clone(), "registry-restart".into()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_streams_infer_columns_from_the_registry_and_queries_write_avro() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let port = server.port.to_string();
    python("http_clients.py", &[server.http.clone(), server.kafka.clone(), "avro".into(), port]).await;
    // INSERT writes with the subject's schema, and is refused what it does not take.
    let c = server.client().await;
    let (code, _) = crate::common::sqlstate(&c, "INSERT INTO orders (id, customer) VALUES (9, 'zed')").await;
    assert_eq!(code, "22023", "an INSERT missing a required Avro field");
    query(&c, "CREATE STREAM av2 (k STRING KEY, n INT) WITH (KAFKA_TOPIC='av2', VALUE_FORMAT='AVRO', PARTITIONS=1)")
        .await;
    query(&c, "INSERT INTO av2 (k, n) VALUES ('a', 7)").await;
    assert_eq!(query(&c, "SELECT k, n FROM av2").await, vec![crate::common::row(&["a", "7"])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_proxy_large_requests_compacted_topics_and_bad_stream_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    python("http_clients.py", &[server.http.clone(), server.kafka.clone(), "rest-big".into()]).await;
}

/// curl, as the README's examples call it: HTTP/1.1 and HTTP/2 with prior knowledge.
fn curl(args: &[&str]) -> String {
    let out = std::process::Command::new("curl").args(["-s", "--max-time", "30"]).args(args).output().expect("curl");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_http1_and_h2c() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let base = server.http.clone();
    tokio::task::spawn_blocking(move || {
        assert!(curl(&[&format!("{base}/info")]).contains("\"serverStatus\":\"RUNNING\""));
        let produced = curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/vnd.kafka.json.v2+json",
            &format!("{base}/topics/clicks"),
            "-d",
            r#"{"records":[{"key":"u1","value":{"page":"/a"}},{"key":"u2","value":{"page":"/b"}}]}"#,
        ]);
        assert!(produced.contains("\"offset\":1"), "{produced}");
        let created = curl(&[
            "-X",
            "POST",
            &format!("{base}/ksql"),
            "-d",
            r#"{"ksql":"CREATE STREAM clicks_s (page STRING) WITH (KAFKA_TOPIC='clicks', VALUE_FORMAT='JSON');","streamsProperties":{}}"#,
        ]);
        assert!(created.contains("Stream created"), "{created}");
        // HTTP/2 with prior knowledge, as the README shows it.
        let rows = curl(&[
            "--http2-prior-knowledge",
            "-w",
            "\n%{http_version}",
            "-X",
            "POST",
            &format!("{base}/query-stream"),
            "-d",
            r#"{"sql":"SELECT * FROM clicks_s EMIT CHANGES LIMIT 2;","properties":{"auto.offset.reset":"earliest"}}"#,
        ]);
        let lines: Vec<&str> = rows.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 4, "{rows}");
        assert!(lines[0].contains("\"columnNames\":[\"PAGE\"]"), "{rows}");
        assert_eq!(&lines[1..], &["[\"/a\"]", "[\"/b\"]", "2"], "{rows}");
        assert!(curl(&[&format!("{base}/metrics")]).contains("eddy_http_requests_total{code=\"2xx\"}"));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_proxy_consumer_instances_share_a_group_with_librdkafka_and_v3_admin() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    python("rest_consumers.py", &[server.http.clone(), server.kafka.clone(), "consumers".into()]).await;
    // v3 topic configs (seen by Kafka's DescribeConfigs too) and records:batch.
    python("rest_consumers.py", &[server.http.clone(), server.kafka.clone(), "admin".into()]).await;
    // The avro and jsonschema embedded formats (v2 and v3), read back by Confluent's
    // deserializers and by consumer instances.
    let port = server.port.to_string();
    python("rest_consumers.py", &[server.http.clone(), server.kafka.clone(), "schemas".into(), port]).await;
    drop(server);
    // Instance limits and idle expiry.
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        tmp.path(),
        0,
        &["--http-max-consumers", "2", "--http-consumer-idle-ms", "2000", "--client-write-timeout-ms", "1500"],
    );
    python("rest_consumers.py", &[server.http.clone(), server.kafka.clone(), "limits".into()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_tls_cert_http2_by_alpn_and_basic_auth() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let password = tmp.path().join("password");
    std::fs::write(&password, "t1s-pw\n").unwrap();
    let server = Server::start_with(
        &tmp.path().join("data"),
        0,
        &[
            "--password-file",
            password.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let cert = cert.to_str().unwrap().to_string();
    python("http_clients.py", &[server.http.clone(), server.kafka.clone(), "tls".into(), "t1s-pw".into(), cert]).await;
}
