//! A stand-in SMTP relay: a tiny server on a random port that speaks enough SMTP for lettre
//! (EHLO advertising `AUTH PLAIN LOGIN` and never STARTTLS, AUTH, MAIL, RCPT, DATA with
//! dot-unstuffing, RSET, NOOP, QUIT), records every message it accepts (envelope, who signed
//! in, the raw data) and can refuse DATA for now (451) for the first messages, to test retries.
//! [`ReceivedMail::parsed`] reads a message back with `mail-parser`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;

/// The relay's dummy credentials, as the app's `SMTP_URL` carries them.
pub const SMTP_USER: &str = "DUMMYuser";
pub const SMTP_PASSWORD: &str = "DUMMYpass";

/// One message the receiver accepted.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// `MAIL FROM`'s address.
    pub from: String,
    /// Every `RCPT TO` address.
    pub to: Vec<String>,
    /// The user the client signed in as (AUTH PLAIN or LOGIN), if it did.
    pub auth_user: Option<String>,
    /// The password it signed in with.
    pub auth_password: Option<String>,
    /// The message as sent, dot-unstuffed, without the final `.` line.
    pub data: Vec<u8>,
}

/// What the receiver saw, across all connections.
#[derive(Debug, Default)]
struct Log {
    received: Vec<ReceivedMail>,
    connections: usize,
    /// Every `DATA` command, refused or not.
    data_commands: usize,
    /// Every command's verb (`EHLO`, `AUTH`, `MAIL`…), in order.
    verbs: Vec<String>,
}

pub struct SmtpReceiver {
    pub port: u16,
    log: Arc<Mutex<Log>>,
}

impl SmtpReceiver {
    /// A receiver that accepts every message.
    pub fn start() -> Self {
        Self::refusing_first(0)
    }

    /// A receiver that answers `451` to the first `refusals` DATA commands, then accepts.
    pub fn refusing_first(refusals: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = Arc::clone(&log);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let log = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = serve(stream, &log, refusals);
                });
            }
        });
        Self { port, log }
    }

    /// `SMTP_URL` for this receiver: plain SMTP (it offers no STARTTLS) with the dummy
    /// credentials.
    pub fn url(&self) -> String {
        format!(
            "smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{}?tls=none",
            self.port
        )
    }

    pub fn received(&self) -> Vec<ReceivedMail> {
        self.log.lock().unwrap().received.clone()
    }

    pub fn connections(&self) -> usize {
        self.log.lock().unwrap().connections
    }

    pub fn data_commands(&self) -> usize {
        self.log.lock().unwrap().data_commands
    }

    /// Every command's verb so far, in order.
    pub fn verbs(&self) -> Vec<String> {
        self.log.lock().unwrap().verbs.clone()
    }

    /// Waits (up to 15 s) until `n` messages have arrived, then returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<ReceivedMail> {
        for _ in 0..300 {
            if self.received().len() >= n {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        self.received()
    }
}

/// The state of one SMTP session.
#[derive(Default)]
struct Session {
    auth_user: Option<String>,
    auth_password: Option<String>,
    from: Option<String>,
    to: Vec<String>,
}

fn serve(stream: TcpStream, log: &Mutex<Log>, refusals: usize) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    log.lock().unwrap().connections += 1;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    let mut session = Session::default();
    let mut line = String::new();
    out.write_all(b"220 localhost ESMTP tollgate-test\r\n")?;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let command = line.trim_end_matches(['\r', '\n']);
        let (verb, rest) = command.split_once(' ').unwrap_or((command, ""));
        let verb = verb.to_ascii_uppercase();
        log.lock().unwrap().verbs.push(verb.clone());
        match verb.as_str() {
            "EHLO" => out.write_all(
                b"250-localhost greets you\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250 SIZE 10485760\r\n",
            )?,
            "HELO" => out.write_all(b"250 localhost\r\n")?,
            "AUTH" => {
                let mut words = rest.split_whitespace();
                let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
                let initial = words.next().map(str::to_owned);
                let (user, password) = match mechanism.as_str() {
                    "PLAIN" => {
                        let response = match initial {
                            Some(response) => response,
                            None => challenge(&mut reader, &mut out, "")?,
                        };
                        let plain = decode(&response);
                        let mut parts = plain.split('\0').skip(1);
                        (
                            parts.next().unwrap_or_default().to_owned(),
                            parts.next().unwrap_or_default().to_owned(),
                        )
                    }
                    "LOGIN" => {
                        let user = match initial {
                            Some(user) => user,
                            None => challenge(&mut reader, &mut out, "VXNlcm5hbWU6")?,
                        };
                        let password = challenge(&mut reader, &mut out, "UGFzc3dvcmQ6")?;
                        (decode(&user), decode(&password))
                    }
                    _ => {
                        out.write_all(b"504 5.5.4 Unrecognized authentication type\r\n")?;
                        continue;
                    }
                };
                session.auth_user = Some(user);
                session.auth_password = Some(password);
                out.write_all(b"235 2.7.0 Authentication successful\r\n")?;
            }
            "MAIL" => {
                session.from = Some(address(rest));
                session.to.clear();
                out.write_all(b"250 2.1.0 OK\r\n")?;
            }
            "RCPT" => {
                session.to.push(address(rest));
                out.write_all(b"250 2.1.5 OK\r\n")?;
            }
            "DATA" => {
                let refuse = {
                    let mut log = log.lock().unwrap();
                    log.data_commands += 1;
                    log.data_commands <= refusals
                };
                if refuse {
                    session.from = None;
                    session.to.clear();
                    out.write_all(b"451 4.3.0 Try again later\r\n")?;
                    continue;
                }
                if session.from.is_none() || session.to.is_empty() {
                    out.write_all(b"503 5.5.1 MAIL and RCPT first\r\n")?;
                    continue;
                }
                out.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
                let data = read_data(&mut reader)?;
                log.lock().unwrap().received.push(ReceivedMail {
                    from: session.from.take().unwrap_or_default(),
                    to: std::mem::take(&mut session.to),
                    auth_user: session.auth_user.clone(),
                    auth_password: session.auth_password.clone(),
                    data,
                });
                out.write_all(b"250 2.0.0 OK queued\r\n")?;
            }
            "RSET" => {
                session.from = None;
                session.to.clear();
                out.write_all(b"250 2.0.0 OK\r\n")?;
            }
            "NOOP" => out.write_all(b"250 2.0.0 OK\r\n")?,
            "QUIT" => {
                out.write_all(b"221 2.0.0 Bye\r\n")?;
                return Ok(());
            }
            _ => out.write_all(b"502 5.5.2 Command not recognized\r\n")?,
        }
    }
}

/// Sends a `334` challenge and returns the client's answer line.
fn challenge(
    reader: &mut BufReader<TcpStream>,
    out: &mut TcpStream,
    prompt: &str,
) -> std::io::Result<String> {
    write!(out, "334 {prompt}\r\n")?;
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    Ok(answer.trim_end().to_owned())
}

fn decode(b64: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `FROM:<a@b> BODY=8BITMIME` → `a@b`.
fn address(rest: &str) -> String {
    let start = rest.find('<').map_or(0, |i| i + 1);
    let end = rest[start..].find('>').map_or(rest.len(), |i| start + i);
    rest[start..end].to_owned()
}

/// Reads DATA up to the `.` line, undoing dot-stuffing (a line starting `..` loses one dot).
fn read_data(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(data);
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(data);
        }
        let unstuffed = if line.starts_with(b"..") {
            &line[1..]
        } else {
            &line[..]
        };
        data.extend_from_slice(unstuffed);
    }
}

/// A received message read back: headers as a mail client shows them, and both parts decoded
/// (line ends as `\n`).
#[derive(Debug, Clone)]
pub struct ParsedMail {
    pub subject: String,
    /// `Name <address>` or `address`.
    pub from: String,
    pub to: Vec<String>,
    pub reply_to: Option<String>,
    /// With its angle brackets, as on the wire: `<msg_…@example.com>`.
    pub message_id: String,
    /// The raw `Content-Type` header of the message.
    pub content_type: String,
    pub text: String,
    pub html: String,
    pub text_parts: usize,
    pub html_parts: usize,
}

fn mailbox(addr: &mail_parser::Addr<'_>) -> String {
    match (addr.name(), addr.address()) {
        (Some(name), Some(address)) => format!("{name} <{address}>"),
        (None, Some(address)) => address.to_owned(),
        (name, None) => name.unwrap_or_default().to_owned(),
    }
}

impl ReceivedMail {
    pub fn raw(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    pub fn parsed(&self) -> ParsedMail {
        let message = mail_parser::MessageParser::default()
            .parse(&self.data)
            .expect("the received message parses");
        let addresses = |list: Option<&mail_parser::Address<'_>>| -> Vec<String> {
            list.map(|l| l.iter().map(mailbox).collect())
                .unwrap_or_default()
        };
        let lf = |s: Option<std::borrow::Cow<'_, str>>| s.unwrap_or_default().replace("\r\n", "\n");
        ParsedMail {
            subject: message.subject().unwrap_or_default().to_owned(),
            from: addresses(message.from()).join(", "),
            to: addresses(message.to()),
            reply_to: message
                .reply_to()
                .map(|_| addresses(message.reply_to()).join(", ")),
            message_id: format!("<{}>", message.message_id().unwrap_or_default()),
            content_type: message
                .header_raw("Content-Type")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            text_parts: message.text_body_count(),
            html_parts: message.html_body_count(),
            text: lf(message.body_text(0)),
            html: lf(message.body_html(0)),
        }
    }
}
