//! Crash safety: `tollgate serve` killed with SIGKILL mid-delivery loses nothing it
//! acknowledged, and Stripe's retries of what it did not land exactly once.

use std::collections::HashSet;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::prelude::*;
use tollgate::db::Db;
use tollgate::db::schema::webhook_events;

use super::signed_now;
use crate::common::{
    Backend, TestDatabase, WEBHOOK_SECRET, announced_address, secret_env, serve_command,
    stripe_event,
};
use crate::on_both_backends;

on_both_backends!(acknowledged_events_survive_a_sigkill);

/// How many senders deliver at once.
const SENDERS: usize = 8;

/// `tollgate serve` as a process on `database`; returns it with its address.
fn serve(database: &TestDatabase, dir: &std::path::Path) -> (Child, String) {
    let mut child = serve_command(dir)
        .envs(secret_env())
        .env("DATABASE_URL", &database.url_string)
        .env("WORKERS", "2")
        .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("RATE_LIMIT_WEBHOOK_PER_MINUTE", "600000")
        .env("RATE_LIMIT_WEBHOOK_BURST", "100000")
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    let address = announced_address(&mut child, "listening on ");
    let address = address
        .recv_timeout(Duration::from_secs(60))
        .expect("tollgate serve says where it listens");
    (child, address)
}

/// Delivers the payment failure `id` to the server at `address`: Ok when acknowledged.
async fn send(client: reqwest::Client, address: String, id: String) -> Result<(), String> {
    let body = serde_json::to_vec(&stripe_event("invoice.payment_failed", &id)).unwrap();
    let res = client
        .post(format!("{address}/webhooks/stripe"))
        .header("stripe-signature", signed_now(&body))
        .body(body)
        .send()
        .await;
    match res {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("{id}: HTTP {}", r.status())),
        Err(e) => Err(format!("{id}: connection: {e}")),
    }
}

async fn acknowledged_events_survive_a_sigkill(backend: Backend) {
    let database = TestDatabase::new(backend);
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = serve(&database, dir.path());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let (acknowledged, sent) = deliver_until_killed(server, &client, &address).await;
    assert!(
        acknowledged.len() >= 20,
        "events were flowing when it died: {}",
        acknowledged.len()
    );

    // Restarted, the server has every acknowledged event, stored and applied.
    let (mut server, address) = serve(&database, dir.path());
    let db = database.db();
    let stored = every_acknowledged_event_is_applied(&db, &acknowledged, sent);

    // Stripe retries every delivery it saw fail (a duplicate when the server had stored it
    // before dying): each lands exactly once.
    let mut expected = stored.len();
    for sender in 0..SENDERS {
        for n in 0..=(last_attempt(&acknowledged, sender) + 1) {
            let id = format!("evt_1Crash{sender}x{n}");
            expected += usize::from(!stored.contains(&id));
            send(client.clone(), address.clone(), id).await.unwrap();
        }
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let total = db
        .run_blocking(tollgate::db::models::webhook_event::count)
        .unwrap();
    assert_eq!(total as usize, expected);
}

/// Eight senders deliver distinct events as fast as they can; the server is killed mid-flow.
/// The ids it acknowledged, and how many deliveries were attempted.
async fn deliver_until_killed(
    mut server: Child,
    client: &reqwest::Client,
    address: &str,
) -> (Vec<String>, usize) {
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (client, address, acknowledged) =
                (client.clone(), address.to_owned(), acknowledged.clone());
            actix_web::rt::spawn(async move {
                for n in 0usize.. {
                    let id = format!("evt_1Crash{sender}x{n}");
                    match send(client.clone(), address.clone(), id.clone()).await {
                        Ok(()) => acknowledged.lock().unwrap().push(id),
                        Err(stopped) => return (n, stopped),
                    }
                }
                unreachable!()
            })
        })
        .collect();
    // Killed once events are flowing (at least 20 acknowledged; a loaded machine may take a
    // while to get there), and at least 700 ms in.
    let started = std::time::Instant::now();
    while acknowledged.lock().unwrap().len() < 20 || started.elapsed() < Duration::from_millis(700)
    {
        if started.elapsed() > Duration::from_secs(60) {
            server.kill().unwrap();
            panic!("no events flowing");
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    let mut sent = 0;
    for sender in senders {
        let (attempts, stopped) = sender.await.unwrap();
        assert!(
            stopped.contains("connection"),
            "stopped by the kill, not refused: {stopped}"
        );
        sent += attempts + 1;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    (acknowledged, sent)
}

/// Every acknowledged event is stored and applied, nothing was invented (at most `sent`
/// rows), and each stored event took effect once; the ids stored.
fn every_acknowledged_event_is_applied(
    db: &Db,
    acknowledged: &[String],
    sent: usize,
) -> HashSet<String> {
    let rows: Vec<(String, String)> = db
        .run_blocking(|conn| {
            Ok::<_, tollgate::db::DbError>(
                webhook_events::table
                    .select((webhook_events::stripe_event_id, webhook_events::status))
                    .load(conn)?,
            )
        })
        .unwrap();
    let applied: HashSet<&str> = rows
        .iter()
        .filter(|(_, status)| status == "applied")
        .map(|(id, _)| id.as_str())
        .collect();
    for id in acknowledged {
        assert!(
            applied.contains(id.as_str()),
            "{id} was acknowledged but is not applied"
        );
    }
    assert!(rows.len() <= sent, "nothing invented");
    let effects = db
        .run_blocking(|conn| {
            tollgate::db::models::security_event::count_of_kind(conn, "webhook_validated")
        })
        .unwrap();
    assert_eq!(
        effects as usize,
        rows.len(),
        "each stored event took effect once"
    );
    rows.into_iter().map(|(id, _)| id).collect()
}

/// The highest `n` of `evt_1Crash{sender}x{n}` acknowledged (-1 when none).
fn last_attempt(acknowledged: &[String], sender: usize) -> i64 {
    acknowledged
        .iter()
        .filter_map(|id| id.strip_prefix(&format!("evt_1Crash{sender}x")))
        .filter_map(|n| n.parse::<i64>().ok())
        .max()
        .unwrap_or(-1)
}
