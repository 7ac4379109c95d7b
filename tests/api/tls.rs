//! Managed services speak TLS: a `rediss://` Redis (a `redis-server --tls-port` of the test's own,
//! with a CA made at test time by `openssl`) carries the rate limits, verified against
//! `--redis-ca-file`; PostgreSQL's `sslmode` and `sslrootcert` are honoured (the test database
//! serves TLS with its own certificate).
//!
//! These tests choose their services themselves, whatever `NANO_BANANA_TEST_STACK` says.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nano_banana::limits::{FailureMode, RedisSettings};
use serde_json::json;
use sqlx::Connection;

use crate::{
    helpers::{answer, assert_error, fresh_postgres_schema, spawn_app_with},
    ratelimit_redis::{ADMIN_KEY, limited_application},
};

fn run(command: &mut Command) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{command:?} did not run: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA and a certificate it signed for 127.0.0.1, made by `openssl` in `dir`.
struct TestPki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl TestPki {
    fn make(dir: &Path, name: &str) -> TestPki {
        let path = |file: &str| dir.join(format!("{name}-{file}"));
        let (ca, ca_key) = (path("ca.pem"), path("ca.key"));
        let (cert, key, csr, ext) = (
            path("server.pem"),
            path("server.key"),
            path("server.csr"),
            path("ext.cnf"),
        );
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", &format!("/CN=nano-banana test CA {name}")])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca));
        run(Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n").expect("ext file");
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert));
        TestPki { ca, cert, key }
    }
}

/// A `redis-server` that speaks only TLS, on a port of its own; stopped when dropped.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
}

impl TlsRedis {
    async fn start(pki: &TestPki, dir: &Path) -> TlsRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--tls-auth-clients", "no"])
            .arg("--tls-cert-file")
            .arg(&pki.cert)
            .arg("--tls-key-file")
            .arg(&pki.key)
            .arg("--tls-ca-cert-file")
            .arg(&pki.ca)
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server (Debian's, built with TLS) starts");
        let redis = TlsRedis { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "redis-server --tls-port never listened"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        redis
    }

    fn settings(&self, ca: &Path) -> RedisSettings {
        let mut settings = RedisSettings::new(format!("rediss://127.0.0.1:{}", self.port));
        settings.ca_pem = Some(std::fs::read(ca).expect("the CA file"));
        // This Redis is the test's own, gone with it: nothing to note for removal.
        settings.prefix = format!("nb-tls-test:{}:", uuid::Uuid::new_v4());
        settings.failure_mode = FailureMode::Closed;
        settings.timeout = Duration::from_secs(2);
        settings
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server limiting through `redis`, and a token of an application allowed 2 requests at once.
async fn limited_app(redis: RedisSettings) -> (crate::helpers::TestApp, String) {
    let app = spawn_app_with(move |c| {
        c.admin_key = Some(ADMIN_KEY.into());
        c.redis = Some(redis);
    })
    .await;
    let token = limited_application(&app, 1, 2).await;
    (app, token)
}

async fn generate(app: &crate::helpers::TestApp, token: &str) -> crate::helpers::Answer {
    app.post(
        "/nano-banana/images",
        Some(token),
        json!({"prompt": "over TLS", "async": true}).to_string(),
    )
    .await
}

#[tokio::test]
async fn rate_limits_go_through_a_redis_that_speaks_only_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = TestPki::make(dir.path(), "redis");
    let redis = TlsRedis::start(&pki, dir.path()).await;
    let (app, token) = limited_app(redis.settings(&pki.ca)).await;
    // The burst of two, then the limit: decided by the GCRA script in the TLS Redis (the
    // failure mode is closed, so a Redis that could not be reached would answer api_error).
    for _ in 0..2 {
        let accepted = generate(&app, &token).await;
        assert_eq!(accepted.status, 200, "{}", accepted.body);
    }
    let limited = generate(&app, &token).await;
    assert_error(&limited, 429, "too_many_requests");
    let ready = answer(app.get("/readyz").await).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
}

#[tokio::test]
async fn a_tls_redis_whose_certificate_does_not_chain_to_the_ca_file_is_not_used() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = TestPki::make(dir.path(), "redis");
    let stranger = TestPki::make(dir.path(), "stranger");
    let redis = TlsRedis::start(&pki, dir.path()).await;
    // Trusting another CA: the handshake fails, and with the failure mode closed the request
    // is refused rather than let through unchecked.
    let (app, token) = limited_app(redis.settings(&stranger.ca)).await;
    let refused = generate(&app, &token).await;
    assert_error(&refused, 500, "api_error");
    let ready = answer(app.get("/readyz").await).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
}

/// The certificate the test PostgreSQL serves (its `ssl_cert_file`), to trust as a CA.
async fn postgresql_certificate(url: &str) -> PathBuf {
    let mut connection = sqlx::PgConnection::connect(url)
        .await
        .expect("the test PostgreSQL");
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut connection)
        .await
        .expect("SHOW ssl");
    assert_eq!(ssl, "on", "the test PostgreSQL must serve TLS (ssl = on)");
    let file: String = sqlx::query_scalar("SHOW ssl_cert_file")
        .fetch_one(&mut connection)
        .await
        .expect("SHOW ssl_cert_file");
    let path = PathBuf::from(&file);
    if path.is_absolute() {
        return path;
    }
    let data: String = sqlx::query_scalar("SHOW data_directory")
        .fetch_one(&mut connection)
        .await
        .expect("SHOW data_directory");
    Path::new(&data).join(path)
}

#[tokio::test]
async fn postgresql_sslmode_and_its_ca_file_are_honoured() {
    let schema_url = fresh_postgres_schema().await;
    let certificate = postgresql_certificate(&schema_url).await;
    let name = format!("nb_tls_{}", uuid::Uuid::new_v4().simple());
    let url = format!(
        "{schema_url}&sslmode=verify-ca&sslrootcert={}&application_name={name}",
        certificate.display()
    );
    let app = spawn_app_with({
        let url = url.clone();
        move |c| c.database_url = url
    })
    .await;
    let accepted = app
        .post(
            "/nano-banana/images",
            Some(&app.token),
            json!({"prompt": "over TLS", "async": true}).to_string(),
        )
        .await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    let mut observer = sqlx::PgConnection::connect(&schema_url)
        .await
        .expect("observer");
    let (total, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = $1",
    )
    .bind(&name)
    .fetch_one(&mut observer)
    .await
    .expect("pg_stat_ssl");
    assert!(total > 0, "the server's connections are not there");
    assert_eq!(encrypted, total, "every connection of the server uses TLS");

    // A CA that did not sign the server's certificate: the start fails, saying why.
    let dir = tempfile::tempdir().expect("temp dir");
    let stranger = TestPki::make(dir.path(), "stranger");
    let refused = format!(
        "{schema_url}&sslmode=verify-ca&sslrootcert={}",
        stranger.ca.display()
    );
    let error = nano_banana::storage::Db::connect(&refused)
        .await
        .expect_err("an untrusted certificate is refused");
    let text = error.to_string();
    assert!(
        text.starts_with("cannot connect to PostgreSQL at") && text.contains("certificate"),
        "{text}"
    );
}
