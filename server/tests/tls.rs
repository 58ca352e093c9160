//! HTTPS with rustls when a certificate is configured.

mod common;

use serde_json::{Value, json};

#[tokio::test]
async fn serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    std::fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key_pem).unwrap();

    let mut cfg = common::config(&dir.path().join("data"));
    cfg.tls = Some(bilten_analytics::config::TlsSettings {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    });
    cfg.validate().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bilten_analytics::serve(cfg, listener, async move {
        let _ = rx.await;
    }));

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let base = format!("https://localhost:{port}");
    let mut up = false;
    for _ in 0..200 {
        if client
            .get(format!("{base}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(up, "no HTTPS answer");
    let r = client
        .post(format!("{base}/v1/events"))
        .json(&json!({"event_type":"x","organizer_id":"o"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.unwrap()["accepted"], 1);
    // Plain HTTP on the same port gets no answer of ours.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);

    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[test]
fn a_missing_certificate_is_a_clear_config_error() {
    let cfg = bilten_analytics::config::Config {
        tls: Some(bilten_analytics::config::TlsSettings {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        }),
        ..Default::default()
    };
    assert_eq!(
        cfg.validate().unwrap_err().to_string(),
        "tls.cert: no file at /nonexistent/cert.pem"
    );
}
