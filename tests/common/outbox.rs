//! The notification outbox from a test's side: an app-webhook endpoint registered straight in
//! the database (sealed as Tollgate seals it), and waiting for the worker.

use std::time::Duration;

use secrecy::ExposeSecret as _;
use tollgate::db::DbConnection;
use tollgate::db::models::notification::NotificationRow;

use super::TestApp;

/// The keyring of every test app (the dummy `ENCRYPTION_KEY` of `secret_env`).
pub fn test_keyring() -> tollgate::crypto::Keyring {
    let url = tollgate::config::DatabaseUrl::parse("sqlite:///unused-test-keyring.db").unwrap();
    super::app::test_config(url).keyring()
}

/// Registers an enabled endpoint at `url` for `events`; returns its id and `whsec_` secret.
pub fn add_endpoint(conn: &mut DbConnection, url: &str, events: &[&str]) -> (i64, String) {
    use diesel::prelude::*;
    use tollgate::db::schema::webhook_endpoints as e;

    let secret = tollgate::notify::endpoints::generate_secret().unwrap();
    let public_id = format!("ep_{}", uuid_like());
    let keyring = test_keyring();
    let sealed = keyring
        .seal(
            secret.expose_secret().as_bytes(),
            &tollgate::notify::endpoints::secret_aad(&public_id, "secret"),
        )
        .unwrap();
    let now = tollgate::db::now();
    diesel::insert_into(e::table)
        .values((
            e::public_id.eq(&public_id),
            e::url.eq(url),
            e::event_types.eq(events.join(" ")),
            e::secret.eq(&sealed),
            e::key_id.eq(keyring.primary_id().to_string()),
            e::enabled.eq(true),
            e::created_at.eq(now),
            e::updated_at.eq(now),
        ))
        .execute(conn)
        .unwrap();
    let id = e::table
        .filter(e::public_id.eq(&public_id))
        .select(e::id)
        .first(conn)
        .unwrap();
    (id, secret.expose_secret().to_owned())
}

fn uuid_like() -> String {
    hex::encode(tollgate::secret::random_bytes::<12>().unwrap())
}

impl TestApp {
    /// Waits (up to 20 s) until every outbox row on `channel` is finished (sent, dead or not
    /// sent), then returns them.
    pub async fn settled_notifications(&self, channel: &str) -> Vec<NotificationRow> {
        for _ in 0..400 {
            let rows = self.notifications(channel);
            if rows
                .iter()
                .all(|r| matches!(r.status.as_str(), "sent" | "dead" | "not_sent"))
            {
                return rows;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        self.notifications(channel)
    }
}
