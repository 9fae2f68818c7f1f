//! Customer and alert e-mail over SMTP: each of the six messages arrives exactly as written
//! (headers, both parts, the outbox's message id), once; a relay that refuses for now gets it
//! on a later attempt, one that keeps refusing leaves it dead; without SMTP it is kept as "not
//! sent"; an `smtp://` relay without STARTTLS gets nothing in the clear; the relay's password
//! never reaches a log line.

use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use tollgate::config::{Config, SmtpSettings};
use tollgate::db::models::notification::NotificationRow;
use tollgate::notify::email::{Email, Money};

use crate::common::{
    Backend, ParsedMail, SMTP_PASSWORD, SMTP_USER, SmtpReceiver, TestApp, captured_logs,
};
use crate::on_both_backends;

on_both_backends!(
    each_message_arrives_once_exactly_as_written,
    a_relay_refusing_for_now_gets_the_message_on_the_third_attempt,
    a_relay_that_keeps_refusing_leaves_the_message_dead,
    without_smtp_an_e_mail_is_kept_as_not_sent,
    an_smtp_relay_without_starttls_gets_nothing_in_the_clear,
    the_relays_password_never_reaches_a_log_line,
);

const CUSTOMER: &str = "ada@example.net";
const OPERATOR: &str = "ops@example.org";

/// An app that sends through `url` as Acme Cloud, with replies to its support address.
async fn app_sending_to(backend: Backend, url: &str, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let url = url.to_owned();
    TestApp::spawn_with(backend, move |config| {
        config.notify.smtp = Some(SmtpSettings {
            url: url.into(),
            from: "Billing <billing@example.com>".into(),
        });
        config.notify.product_name = "Acme Cloud".into();
        config.notify.support_email = Some("help@acme.example".into());
        config.public_url = Some("https://billing.example.com".into());
        adjust(config);
    })
    .await
}

fn at(y: i32, m: u32, d: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_opt(9, 30, 0)
        .unwrap()
}

fn receipt() -> Email {
    Email::Receipt {
        amount: Money {
            amount: 2500,
            currency: "usd".into(),
        },
        plan: Some("Pro".into()),
        period_start: Some(at(2026, 12, 4)),
        period_end: Some(at(2027, 1, 4)),
        invoice_number: Some("INV-0001".into()),
        invoice_url: Some("https://invoice.stripe.com/i/acct_1/test_1".into()),
    }
}

/// Queues `message` to `to` in the outbox, as an emitter does.
fn queue(app: &TestApp, to: &str, message: &Email, cause: &str) {
    let added = app.query(|conn| tollgate::notify::email(conn, None, to, message, cause));
    assert!(added, "queued once");
}

fn email_row(app: &TestApp, event_type: &str) -> NotificationRow {
    app.notifications("email")
        .into_iter()
        .find(|row| row.event_type == event_type)
        .unwrap()
}

/// Waits (up to 15 s) until every e-mail row has left the statuses still on their way.
async fn settled(app: &TestApp) -> Vec<NotificationRow> {
    for _ in 0..300 {
        let rows = app.notifications("email");
        if rows
            .iter()
            .all(|row| !["pending", "sending", "retrying"].contains(&row.status.as_str()))
        {
            return rows;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "e-mails still on their way: {:?}",
        app.notifications("email")
    );
}

const FOOTER: &str =
    "\nQuestions? Reply to this e-mail or write to help@acme.example.\n\n— Acme Cloud\n";

/// The six messages, each with its recipient, subject and exact plain-text part.
fn six_messages() -> Vec<(Email, &'static str, &'static str, String)> {
    vec![
        (
            receipt(),
            CUSTOMER,
            "Receipt for your Pro subscription — $25.00",
            "Thank you for your payment\n\n\
             We received your payment of $25.00 for your Pro subscription. This e-mail is your receipt.\n\n\
             Amount paid: $25.00\nPlan: Pro\nPeriod: 4 Dec 2026 – 4 Jan 2027\nInvoice: INV-0001\n\n\
             View your invoice: https://invoice.stripe.com/i/acct_1/test_1\n"
                .to_owned()
                + FOOTER,
        ),
        (
            Email::PaymentFailed {
                amount: Money {
                    amount: 2500,
                    currency: "usd".into(),
                },
                plan: Some("Pro".into()),
                invoice_number: Some("INV-0002".into()),
                pay_url: Some("https://invoice.stripe.com/i/acct_1/test_2".into()),
                next_attempt_at: Some(at(2026, 12, 7)),
            },
            CUSTOMER,
            "Payment failed: please update your payment details",
            "Your payment did not go through\n\n\
             We could not collect your payment of $25.00 for your Pro subscription. Please pay the invoice at the link below — you can use a different card there — to keep your subscription active. If nothing changes, we will try again on 7 Dec 2026.\n\n\
             Amount due: $25.00\nPlan: Pro\nInvoice: INV-0002\nNext attempt: 7 Dec 2026\n\n\
             Pay your invoice: https://invoice.stripe.com/i/acct_1/test_2\n"
                .to_owned()
                + FOOTER,
        ),
        (
            Email::TrialEnding {
                plan: Some("Pro".into()),
                trial_end: Some(at(2026, 12, 12)),
            },
            CUSTOMER,
            "Your trial ends on 12 Dec 2026",
            "Your trial ends on 12 Dec 2026\n\n\
             Your trial of the Pro plan ends on 12 Dec 2026. After that your subscription continues as a paid one if a payment method is on file. Check your billing details now to avoid an interruption.\n\n\
             Plan: Pro\nTrial ends: 12 Dec 2026\n\n\
             Review your subscription: https://billing.example.com/account\n"
                .to_owned()
                + FOOTER,
        ),
        (
            Email::PlanChanged {
                from: Some("Pro".into()),
                to: Some("Team".into()),
            },
            CUSTOMER,
            "Your plan changed to Team",
            "Your plan changed to Team\n\n\
             Your subscription moved from Pro to Team. Your account shows the details of your subscription.\n\n\
             Previous plan: Pro\nNew plan: Team\n\n\
             View your subscription: https://billing.example.com/account\n"
                .to_owned()
                + FOOTER,
        ),
        (
            Email::SubscriptionCanceled {
                plan: Some("Team".into()),
                ends_at: Some(at(2027, 1, 4)),
                ended: false,
            },
            CUSTOMER,
            "Your subscription will end on 4 Jan 2027",
            "Your subscription will end on 4 Jan 2027\n\n\
             Your Team subscription has been cancelled. You keep full access until 4 Jan 2027; until then you can resume it from your account.\n\n\
             Plan: Team\nAccess until: 4 Jan 2027\n\n\
             Resume your subscription: https://billing.example.com/account\n"
                .to_owned()
                + FOOTER,
        ),
        (
            Email::SecurityAlert {
                rule: "webhook_signature_failures".into(),
                summary: "12 webhook deliveries failed verification in 5 minutes.".into(),
                raised_at: at(2026, 12, 4),
                instance: "web-1".into(),
            },
            OPERATOR,
            "[Acme Cloud alert] webhook_signature_failures on web-1",
            "Security alert: webhook_signature_failures\n\n\
             12 webhook deliveries failed verification in 5 minutes.\n\n\
             Rule: webhook_signature_failures\nInstance: web-1\nRaised at: 4 Dec 2026, 09:30 UTC\n\n\
             Open the security dashboard: https://billing.example.com/admin\n\n\
             — Acme Cloud on web-1\n\
             You receive this alert because your address is in ALERT_EMAIL_TO.\n"
                .to_owned(),
        ),
    ]
}

async fn each_message_arrives_once_exactly_as_written(backend: Backend) {
    let relay = SmtpReceiver::start();
    let app = app_sending_to(backend, &relay.url(), |_| {}).await;
    let messages = six_messages();
    for (n, (message, to, _, _)) in messages.iter().enumerate() {
        queue(&app, to, message, &format!("evt_{n}"));
    }
    let received = relay.wait_for(messages.len()).await;
    let rows = settled(&app).await;
    assert_eq!(received.len(), 6, "one delivery each");
    for (message, to, subject, text) in &messages {
        let row = email_row(&app, message.template());
        assert_eq!((row.status.as_str(), row.attempts), ("sent", 1), "{row:?}");
        let mail: Vec<(ParsedMail, _)> = received
            .iter()
            .map(|r| (r.parsed(), r))
            .filter(|(m, _)| m.message_id == format!("<{}@example.com>", row.message_id))
            .collect();
        assert_eq!(mail.len(), 1, "{subject}: delivered once");
        let (mail, envelope) = &mail[0];
        assert_eq!(
            (envelope.from.as_str(), envelope.to.clone()),
            ("billing@example.com", vec![to.to_string()])
        );
        assert_eq!(envelope.auth_user.as_deref(), Some(SMTP_USER));
        assert_eq!(envelope.auth_password.as_deref(), Some(SMTP_PASSWORD));
        assert_eq!(mail.subject, *subject);
        assert_eq!(mail.from, "Billing <billing@example.com>");
        assert_eq!(mail.to, vec![to.to_string()]);
        let reply_to = (*to == CUSTOMER).then(|| "help@acme.example".to_owned());
        assert_eq!(mail.reply_to, reply_to, "{subject}");
        assert!(mail.content_type.starts_with("multipart/alternative"));
        assert_eq!((mail.text_parts, mail.html_parts), (1, 1));
        assert_eq!(&mail.text, text, "{subject}");
        assert!(mail.html.contains(">Acme Cloud</td>"), "{}", mail.html);
        assert!(!mail.html.contains("None"), "{}", mail.html);
    }
    let receipt = received
        .iter()
        .map(|r| r.parsed())
        .find(|m| m.subject.starts_with("Receipt"))
        .unwrap();
    for part in [
        "<h1 style=\"margin:0 0 16px 0;font-size:22px;line-height:30px;font-weight:700;color:#14202b;\">Thank you for your payment</h1>",
        "<strong>$25.00</strong> for your Pro subscription",
        ">4 Dec 2026 – 4 Jan 2027</td>",
        "<a href=\"https://invoice.stripe.com/i/acct_1/test_1\" target=\"_blank\"",
        ">View your invoice</a>",
        "<a href=\"mailto:help@acme.example\"",
        "You receive this e-mail because you have an account with Acme Cloud.",
    ] {
        assert!(receipt.html.contains(part), "{part}\n{}", receipt.html);
    }
    assert_eq!(rows.len(), 6);
}

async fn a_relay_refusing_for_now_gets_the_message_on_the_third_attempt(backend: Backend) {
    let relay = SmtpReceiver::refusing_first(2);
    let app = app_sending_to(backend, &relay.url(), |_| {}).await;
    queue(&app, CUSTOMER, &receipt(), "in_1");
    let received = relay.wait_for(1).await;
    settled(&app).await;
    assert_eq!(received.len(), 1);
    assert_eq!(relay.data_commands(), 3, "two refusals, then accepted");
    let row = email_row(&app, "receipt");
    assert_eq!((row.status.as_str(), row.attempts), ("sent", 3), "{row:?}");
    assert_eq!(
        received[0].parsed().message_id,
        format!("<{}@example.com>", row.message_id),
        "a retry keeps the message id"
    );
}

async fn a_relay_that_keeps_refusing_leaves_the_message_dead(backend: Backend) {
    let relay = SmtpReceiver::refusing_first(usize::MAX);
    let app = app_sending_to(backend, &relay.url(), |config| {
        config.notify.max_attempts = 2;
    })
    .await;
    queue(&app, CUSTOMER, &receipt(), "in_1");
    let rows = settled(&app).await;
    let row = &rows[0];
    assert_eq!((row.status.as_str(), row.attempts), ("dead", 2), "{row:?}");
    assert_eq!(
        row.last_error.as_deref(),
        Some("the mail server refused for now (451)")
    );
    assert_eq!(relay.data_commands(), 2);
    assert!(relay.received().is_empty());
}

async fn without_smtp_an_e_mail_is_kept_as_not_sent(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    queue(&app, CUSTOMER, &receipt(), "in_1");
    let rows = settled(&app).await;
    assert_eq!(rows.len(), 1, "kept");
    let row = &rows[0];
    assert_eq!(row.status, "not_sent");
    assert_eq!(
        row.last_error.as_deref(),
        Some("not sent: SMTP not configured")
    );
    assert_eq!((row.recipient.as_str(), row.sent_at), (CUSTOMER, None));
    let kept: Email = serde_json::from_str(&row.payload).unwrap();
    assert_eq!(kept, receipt(), "nothing of the message is lost");
}

async fn an_smtp_relay_without_starttls_gets_nothing_in_the_clear(backend: Backend) {
    let relay = SmtpReceiver::start();
    let url = format!(
        "smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{}",
        relay.port
    );
    let app = app_sending_to(backend, &url, |config| {
        config.notify.max_attempts = 2;
    })
    .await;
    queue(&app, CUSTOMER, &receipt(), "in_1");
    let rows = settled(&app).await;
    let row = &rows[0];
    assert_eq!((row.status.as_str(), row.attempts), ("dead", 2), "{row:?}");
    assert!(
        row.last_error.as_deref().unwrap().contains("STARTTLS"),
        "{row:?}"
    );
    assert_eq!(relay.connections(), 2, "it did try");
    let verbs = relay.verbs();
    assert!(
        verbs.iter().all(|v| v == "EHLO" || v == "QUIT"),
        "{verbs:?}"
    );
    assert_eq!(relay.data_commands(), 0);
    assert!(relay.received().is_empty());
}

async fn the_relays_password_never_reaches_a_log_line(backend: Backend) {
    // One refusal: the retry path logs too.
    let relay = SmtpReceiver::refusing_first(1);
    let app = app_sending_to(backend, &relay.url(), |_| {}).await;
    queue(&app, CUSTOMER, &receipt(), "in_1");
    assert_eq!(relay.wait_for(1).await.len(), 1);
    settled(&app).await;
    let logs = captured_logs();
    assert!(
        logs.contains("notification sent"),
        "the delivery was logged"
    );
    let plain_auth =
        tollgate::secret::encode_base64(format!("\0{SMTP_USER}\0{SMTP_PASSWORD}").as_bytes());
    for secret in [SMTP_PASSWORD, plain_auth.as_str()] {
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
}
