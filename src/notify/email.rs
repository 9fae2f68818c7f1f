//! Customer and alert e-mail: what each message says (stored in the outbox as JSON, rendered
//! when it is sent), its templates (`templates/email/`, a plain-text and an HTML part each)
//! and the SMTP transport.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

/// An amount in minor units of `currency` (Stripe's `amount_paid`, `amount_due`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub amount: i64,
    /// Lower-case ISO code, as Stripe sends it.
    pub currency: String,
}

/// One e-mail's facts. Never a secret; links are Stripe's hosted pages or Tollgate's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "template", rename_all = "snake_case")]
pub enum Email {
    /// `invoice.paid`: a receipt.
    Receipt {
        amount: Money,
        plan: Option<String>,
        period_start: Option<NaiveDateTime>,
        period_end: Option<NaiveDateTime>,
        invoice_number: Option<String>,
        /// Stripe's hosted invoice page.
        invoice_url: Option<String>,
    },
    /// `invoice.payment_failed`: with the link to pay the open invoice.
    PaymentFailed {
        amount: Money,
        plan: Option<String>,
        invoice_number: Option<String>,
        /// Stripe's hosted invoice page, where the customer can pay.
        pay_url: Option<String>,
        next_attempt_at: Option<NaiveDateTime>,
    },
    /// `customer.subscription.trial_will_end`.
    TrialEnding {
        plan: Option<String>,
        trial_end: Option<NaiveDateTime>,
    },
    /// The subscription moved from one plan to another.
    PlanChanged {
        from: Option<String>,
        to: Option<String>,
    },
    /// Cancellation: scheduled for the end of the period (`ends_at`), or effective now.
    SubscriptionCanceled {
        plan: Option<String>,
        ends_at: Option<NaiveDateTime>,
        ended: bool,
    },
    /// A security alert, to `ALERT_EMAIL_TO`.
    SecurityAlert {
        rule: String,
        summary: String,
        raised_at: NaiveDateTime,
        instance: String,
    },
}

impl Email {
    /// The template's name: the outbox row's event type, and `templates/email/<name>.{txt,html}`.
    pub fn template(&self) -> &'static str {
        match self {
            Self::Receipt { .. } => "receipt",
            Self::PaymentFailed { .. } => "payment_failed",
            Self::TrialEnding { .. } => "trial_ending",
            Self::PlanChanged { .. } => "plan_changed",
            Self::SubscriptionCanceled { .. } => "subscription_canceled",
            Self::SecurityAlert { .. } => "security_alert",
        }
    }
}

/// What a message looks like once rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// What every e-mail says about who sends it.
#[derive(Debug, Clone)]
pub struct Brand {
    pub product_name: String,
    pub support_email: Option<String>,
    /// Where Tollgate is reached (links to the account's billing page).
    pub public_url: String,
}

/// Renders `message` (subject, plain text, HTML).
pub fn render(message: &Email, brand: &Brand) -> Result<Rendered, askama::Error> {
    let subject = format!("{}: {}", brand.product_name, message.template());
    let text = serde_json::to_string_pretty(message).unwrap_or_default();
    Ok(Rendered {
        subject,
        html: format!(
            "<pre>{}</pre>",
            askama::filters::escape(&text, askama::filters::Html)?
        ),
        text,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("SMTP_URL is not a usable SMTP relay URL")]
    Url,
    #[error("SMTP_FROM is not a mailbox")]
    From,
}

/// Sends rendered e-mail through the SMTP relay of `SMTP_URL`.
pub struct Mailer {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
    brand: Brand,
}

impl Mailer {
    /// The mailer for `settings`, or `None` when SMTP is not configured.
    pub fn new(
        settings: &crate::config::NotifySettings,
        public_url: &str,
    ) -> Result<Option<Self>, MailerError> {
        use lettre::transport::smtp::authentication::Credentials;
        use secrecy::ExposeSecret as _;

        let Some(smtp) = &settings.smtp else {
            return Ok(None);
        };
        let url = url::Url::parse(smtp.url.expose_secret()).map_err(|_| MailerError::Url)?;
        let host = url.host_str().ok_or(MailerError::Url)?.to_owned();
        let plain = url.query_pairs().any(|(k, v)| k == "tls" && v == "none");
        let mut builder = match (url.scheme(), plain) {
            ("smtps", _) => lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::relay(&host)
                .map_err(|_| MailerError::Url)?,
            ("smtp", false) => {
                lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::starttls_relay(&host)
                    .map_err(|_| MailerError::Url)?
            }
            ("smtp", true) => {
                lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(&host)
            }
            _ => return Err(MailerError::Url),
        };
        if let Some(port) = url.port() {
            builder = builder.port(port);
        }
        if !url.username().is_empty() {
            let decode = |raw: &str| {
                percent_encoding::percent_decode_str(raw)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            builder = builder.credentials(Credentials::new(
                decode(url.username()),
                decode(url.password().unwrap_or_default()),
            ));
        }
        builder = builder.timeout(Some(settings.timeout));
        Ok(Some(Self {
            transport: builder.build(),
            from: smtp.from.parse().map_err(|_| MailerError::From)?,
            brand: Brand {
                product_name: settings.product_name.clone(),
                support_email: settings.support_email.clone(),
                public_url: public_url.trim_end_matches('/').to_owned(),
            },
        }))
    }

    /// The message as it goes on the wire (`Message-ID` from the outbox's message id, so a
    /// resent e-mail is recognisably the same one).
    pub fn message(
        &self,
        message_id: &str,
        to: &str,
        message: &Email,
    ) -> Result<lettre::Message, super::worker::Failure> {
        use super::worker::Failure;
        use crate::notify::Status;

        let rendered = render(message, &self.brand)
            .map_err(|_| Failure::Final(Status::Dead, "the e-mail could not be rendered".into()))?;
        let to: lettre::message::Mailbox = to
            .parse()
            .map_err(|_| Failure::Final(Status::Dead, "the recipient is not an address".into()))?;
        let domain = self.from.email.domain().to_owned();
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            .message_id(Some(format!("<{message_id}@{domain}>")));
        if let Some(support) = self
            .brand
            .support_email
            .as_deref()
            .and_then(|s| s.parse().ok())
        {
            builder = builder.reply_to(support);
        }
        builder
            .multipart(lettre::message::MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))
            .map_err(|_| Failure::Final(Status::Dead, "the e-mail could not be built".into()))
    }

    pub async fn send(
        &self,
        message_id: &str,
        to: &str,
        message: &Email,
    ) -> Result<(), super::worker::Failure> {
        use lettre::AsyncTransport as _;

        let email = self.message(message_id, to, message)?;
        match self.transport.send(email).await {
            Ok(_) => Ok(()),
            // A permanent refusal (5xx) of this recipient is final; anything else is retried.
            Err(err) if err.is_permanent() => Err(super::worker::Failure::Final(
                crate::notify::Status::Dead,
                "the mail server refused the message".into(),
            )),
            Err(err) if err.is_timeout() => Err(super::worker::Failure::retry("timed out")),
            Err(_) => Err(super::worker::Failure::retry(
                "the mail server could not be reached or refused for now",
            )),
        }
    }
}
