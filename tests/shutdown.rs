//! Stopping `tollgate serve` with SIGTERM (what systemd, Kubernetes and a rolling deploy send):
//! it stops accepting connections at once, finishes the requests it is serving (a Stripe
//! delivery half received included: stored, applied and answered 200, so Stripe does not send
//! it again), then exits 0.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{
    Backend, TestDatabase, WEBHOOK_SECRET, announced_address, postgres_available, secret_env,
    serve_command, stripe_event, stripe_signature_header,
};

#[test]
fn sigterm_drains_an_in_flight_webhook_then_exits_cleanly_sqlite() {
    sigterm_drains_an_in_flight_webhook_then_exits_cleanly(Backend::Sqlite);
}

#[test]
fn sigterm_drains_an_in_flight_webhook_then_exits_cleanly_postgres() {
    if postgres_available() {
        sigterm_drains_an_in_flight_webhook_then_exits_cleanly(Backend::Postgres);
    }
}

fn sigterm_drains_an_in_flight_webhook_then_exits_cleanly(backend: Backend) {
    let database = TestDatabase::migrated(backend);
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve_command(dir.path())
        .envs(secret_env())
        .env("DATABASE_URL", &database.url_string)
        .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .spawn()
        .unwrap();
    let address = announced_address(&mut server, "listening on ")
        .recv_timeout(Duration::from_secs(30))
        .unwrap();
    let host = address.trim_start_matches("http://").to_owned();

    let event = stripe_event("customer.subscription.created", "evt_drained_on_sigterm");
    let body = serde_json::to_vec(&event).unwrap();
    let signature = stripe_signature_header(WEBHOOK_SECRET, chrono::Utc::now().timestamp(), &body);
    let mut delivery = TcpStream::connect(&host).unwrap();
    delivery
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        delivery,
        "POST /webhooks/stripe HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Stripe-Signature: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    delivery.write_all(first).unwrap();
    delivery.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let terminated = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&host).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The rest of the delivery arrives after the signal: it is served all the same.
    delivery.write_all(rest).unwrap();
    let mut answer = String::new();
    delivery.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let stored = database
        .db()
        .run_blocking(|conn| {
            tollgate::db::models::webhook_event::find(conn, "evt_drained_on_sigterm")
        })
        .unwrap();
    assert!(stored.is_some(), "the drained delivery's event is stored");
}
