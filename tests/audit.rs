//! The audit log: every security-relevant event lands in `security_events`.

use crate::common::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(each_account_event_is_recorded_with_severity_actor_and_ip);

async fn each_account_event_is_recorded_with_severity_actor_and_ip(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.signed_in_customer("audit@example.com").await;
    browser.logout().await;
    browser
        .login("audit@example.com", "wrong password here")
        .await;
    browser
        .login("audit@example.com", crate::common::PASSWORD)
        .await;

    let expected = [
        ("signup", "LOW"),
        ("logout", "LOW"),
        ("login_failed", "MEDIUM"),
        ("login_succeeded", "LOW"),
    ];
    for (kind, severity) in expected {
        let events = app.events(kind);
        assert_eq!(events.len(), 1, "{kind}");
        let event = &events[0];
        assert_eq!(event.severity, severity, "{kind}");
        assert_eq!(event.ip.as_deref(), Some("127.0.0.1"), "{kind}");
        serde_json::from_str::<serde_json::Value>(&event.details).expect("details are JSON");
    }
    let user_id = app.query(|conn| {
        Ok(
            tollgate::db::models::user::find_by_email(conn, "audit@example.com")?
                .unwrap()
                .id,
        )
    });
    assert_eq!(
        app.events("login_succeeded")[0].actor.as_deref(),
        Some(format!("user:{user_id}").as_str())
    );
    assert_eq!(
        app.events("logout")[0].actor.as_deref(),
        Some(format!("user:{user_id}").as_str())
    );
}
