//! A stand-in for an operator's alert endpoint (Slack, a pager bridge): a tiny HTTP server on
//! a random port that records each POST (headers and body) and answers as the test tells it:
//! `500` for the first attempts, slowly, or never.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// How the receiver answers its `n`th request (counting from 0).
pub type Answer = Arc<dyn Fn(usize) -> Reply + Send + Sync>;
/// How the receiver answers a request, knowing what it received.
pub type AnswerEach = Arc<dyn Fn(usize, &Received) -> Reply + Send + Sync>;

#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Status(u16),
    /// Waits this long, then answers 200.
    Slow(Duration),
}

pub struct AlertReceiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl AlertReceiver {
    /// A receiver answering every request with 200.
    pub fn start() -> Self {
        Self::answering(Arc::new(|_| Reply::Status(200)))
    }

    pub fn answering(answer: Answer) -> Self {
        Self::answering_each(Arc::new(move |n, _| answer(n)))
    }

    pub fn answering_each(answer: AnswerEach) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks/alerts", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let (log, answer) = (Arc::clone(&log), Arc::clone(&answer));
                std::thread::spawn(move || serve(stream, n, &log, &answer));
            }
        });
        Self { url, received }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (up to 15 s) until `n` requests have arrived, then returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..300 {
            if self.received().len() >= n {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        self.received()
    }
}

fn serve(stream: TcpStream, n: usize, log: &Mutex<Vec<Received>>, answer: &AnswerEach) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut headers = HashMap::new();
    let mut line = String::new();
    // A connection the sender dropped before a whole request arrived (it was killed mid-send)
    // was never received: nothing is recorded or answered.
    if reader.read_line(&mut line).unwrap_or_default() == 0 {
        return;
    }
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or_default() == 0 {
            return;
        }
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let received = Received {
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    log.lock().unwrap().push(received.clone());
    let status = match answer(n, &received) {
        Reply::Status(status) => status,
        Reply::Slow(wait) => {
            std::thread::sleep(wait);
            200
        }
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    );
}

/// Checks `X-Tollgate-Signature: t=<unix>,v1=<hex>` over `"{t}.{body}"` with `secret`, as an
/// operator's endpoint would (constant-time, via `hmac`'s `verify_slice`).
pub fn verify_alert_signature(secret: &str, received: &Received) -> bool {
    let Some(header) = received.headers.get("x-tollgate-signature") else {
        return false;
    };
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(received.body.as_bytes());
    mac.verify_slice(&v1).is_ok()
}

impl super::TestApp {
    /// The `alert` audit rows of rule `rule` so far.
    pub fn alerts(
        &self,
        rule: &str,
    ) -> Vec<tollgate::db::models::security_event::SecurityEventRow> {
        self.events("alert")
            .into_iter()
            .filter(|e| {
                serde_json::from_str::<serde_json::Value>(&e.details).unwrap()["alert"] == rule
            })
            .collect()
    }

    /// Waits (up to 15 s) for `rule`'s alerts to number `n`, then returns them (those raised in
    /// a background task, such as the 5xx rule's).
    pub async fn wait_for_alerts(
        &self,
        rule: &str,
        n: usize,
    ) -> Vec<tollgate::db::models::security_event::SecurityEventRow> {
        for _ in 0..300 {
            if self.alerts(rule).len() >= n {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        self.alerts(rule)
    }

    /// Every alert webhook notification in the outbox.
    pub fn alert_deliveries(&self) -> Vec<tollgate::db::models::notification::NotificationRow> {
        self.notifications("alert_webhook")
    }
}

/// The app's alert webhook pointing at `url`, signed with [`ALERT_SECRET`], retrying fast.
pub fn alert_webhook_to(
    url: &str,
    max_attempts: u32,
    timeout: Duration,
) -> tollgate::config::AlertWebhook {
    tollgate::config::AlertWebhook {
        url: secrecy::SecretString::from(url.to_owned()),
        secret: Some(secrecy::SecretString::from(ALERT_SECRET.to_owned())),
        timeout,
        max_attempts,
        retry_base: Duration::from_millis(100),
    }
}

/// The test alert webhook secret (a dummy).
pub const ALERT_SECRET: &str = "DUMMYalertwebhooksecret-0123456789abcdef";
