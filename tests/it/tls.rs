//! PostgreSQL over TLS: a private cluster that accepts TLS connections only,
//! with a certificate for `localhost` signed by a CA made here.

use std::process::{Command, Stdio};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::json;

use crate::common::pg_cluster::PgCluster;
use crate::common::process::{Client, ProcessServer};

/// A CA: its certificate (PEM) and what signs with it.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A server certificate for `localhost` signed by `ca`: (certificate, key).
fn server_cert(ca: &Ca) -> (String, String) {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Runs `scenario-hub migrate` on `url` and returns its exit status and
/// what it printed on stderr.
async fn migrate(url: String) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_scenario-hub"))
            .arg("migrate")
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run scenario-hub migrate");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// `sslmode=verify-full` with the right root connects and serves; with
/// another CA's root, a host the certificate does not name, or without TLS,
/// the server refuses to start with an error that says why, and does not
/// panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pg_tests),
    ignore = "TEST_DATABASE_URL is not set: PostgreSQL test skipped"
)]
async fn postgres_over_tls_verifies_the_server_certificate() {
    let right = ca("scenario-hub test CA");
    let wrong = ca("another CA");
    let (cert, key) = server_cert(&right);
    let cluster = PgCluster::launch(
        &[
            "ssl = on".to_owned(),
            "ssl_cert_file = 'server.crt'".to_owned(),
            "ssl_key_file = 'server.key'".to_owned(),
        ],
        // TLS or nothing, so a connection that works proves TLS.
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        &[("server.crt", &cert), ("server.key", &key)],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let right_root = dir.path().join("right.pem");
    let wrong_root = dir.path().join("wrong.pem");
    std::fs::write(&right_root, &right.pem).unwrap();
    std::fs::write(&wrong_root, &wrong.pem).unwrap();
    let verify_full = |root: &std::path::Path| {
        cluster.url(
            "localhost",
            &format!("?sslmode=verify-full&sslrootcert={}", root.display()),
        )
    };

    let server = ProcessServer::spawn(&verify_full(&right_root), &[]).await;
    let answer = Client::new(server.addr)
        .gql("{ scenarioTemplates { nodes { id } } }", json!({}))
        .await;
    assert_eq!(answer["scenarioTemplates"]["nodes"], json!([]), "{answer}");
    server.stop("TERM").await;

    let by_ip = |mode: &str| {
        cluster.url(
            "127.0.0.1",
            &format!("?sslmode={mode}&sslrootcert={}", right_root.display()),
        )
    };
    let refusals = [
        (verify_full(&wrong_root), "certificate"),
        // The certificate names localhost, not 127.0.0.1.
        (by_ip("verify-full"), "certificate"),
        (
            cluster.url("localhost", "?sslmode=disable"),
            "no encryption",
        ),
    ];
    for (url, says) in refusals {
        let (ok, stderr) = tokio::time::timeout(Duration::from_secs(60), migrate(url.clone()))
            .await
            .expect("a refused connection fails fast");
        assert!(!ok, "{url} connected: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            stderr.contains("cannot connect to the database") && stderr.contains(says),
            "{url}: {stderr}"
        );
    }
    // verify-ca checks the issuer but not the name; require checks neither.
    for url in [
        by_ip("verify-ca"),
        cluster.url("127.0.0.1", "?sslmode=require"),
    ] {
        let (ok, stderr) = migrate(url.clone()).await;
        assert!(ok, "{url}: {stderr}");
    }
}
