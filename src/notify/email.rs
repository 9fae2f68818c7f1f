//! Customer and alert e-mail: what each message says (stored in the outbox as JSON, rendered
//! when it is sent), its templates (`templates/email/`, a plain-text and an HTML part each)
//! and the SMTP transport.

use askama::Template;
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use crate::billing::plans::format_amount;

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
    /// The customer's usage spend reached `percent` % of their spend alert this period.
    UsageThreshold {
        percent: i64,
        alert: Money,
        spent: Money,
        period_end: Option<NaiveDateTime>,
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
            Self::UsageThreshold { .. } => "usage_threshold",
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

/// Renders `message` (subject, plain text, HTML) from its templates in `templates/email/`.
/// Optional facts that are missing are left out; links that are not web links are not shown.
pub fn render(message: &Email, brand: &Brand) -> Result<Rendered, askama::Error> {
    let account = brand.link("/account");
    match message {
        Email::Receipt {
            amount,
            plan,
            period_start,
            period_end,
            invoice_number,
            invoice_url,
        } => {
            let amount = format_amount(amount.amount, &amount.currency);
            let plan = given(plan);
            let subscription = subscription_name(plan, brand);
            let action = match web_link(invoice_url) {
                Some(url) => Action::new("View your invoice", url),
                None => Action::new("View your account", &account),
            };
            let view = Receipt {
                frame: Frame::customer(
                    brand,
                    "Thank you for your payment".into(),
                    format!("We received your payment of {amount}."),
                    action,
                ),
                subject: format!("Receipt for your {subscription} — {amount}"),
                period: period(period_start.as_ref(), period_end.as_ref()),
                invoice_number: given(invoice_number),
                subscription,
                amount,
                plan,
            };
            parts(&view.subject, &view, &ReceiptText(&view))
        }
        Email::PaymentFailed {
            amount,
            plan,
            invoice_number,
            pay_url,
            next_attempt_at,
        } => {
            let amount = format_amount(amount.amount, &amount.currency);
            let plan = given(plan);
            let pay_url = web_link(pay_url);
            let action = match pay_url {
                Some(url) => Action::new("Pay your invoice", url),
                None => Action::new("Update your payment details", &account),
            };
            let view = PaymentFailed {
                frame: Frame::customer(
                    brand,
                    "Your payment did not go through".into(),
                    format!("We could not collect {amount}. Please pay the invoice."),
                    action,
                ),
                subscription: subscription_name(plan, brand),
                has_pay_link: pay_url.is_some(),
                invoice_number: given(invoice_number),
                next_attempt: next_attempt_at.as_ref().map(day),
                amount,
                plan,
            };
            let subject = "Payment failed: please update your payment details";
            parts(subject, &view, &PaymentFailedText(&view))
        }
        Email::TrialEnding { plan, trial_end } => {
            let plan = given(plan);
            let trial_end = trial_end.as_ref().map(day);
            let subject = match &trial_end {
                Some(at) => format!("Your trial ends on {at}"),
                None => "Your trial ends soon".to_owned(),
            };
            let view = TrialEnding {
                frame: Frame::customer(
                    brand,
                    subject.clone(),
                    "Check your billing details to keep your subscription.".into(),
                    Action::new("Review your subscription", &account),
                ),
                trial_of: plan.map_or_else(
                    || brand.product_name.clone(),
                    |plan| format!("the {plan} plan"),
                ),
                plan,
                trial_end,
            };
            parts(&subject, &view, &TrialEndingText(&view))
        }
        Email::PlanChanged { from, to } => {
            let (from, to) = (given(from), given(to));
            let subject = match to {
                Some(to) => format!("Your plan changed to {to}"),
                None => "Your plan has changed".to_owned(),
            };
            let summary = match (from, to) {
                (Some(from), Some(to)) => format!("Your subscription moved from {from} to {to}."),
                (None, Some(to)) => format!("Your subscription moved to the {to} plan."),
                (Some(from), None) => format!("Your subscription moved from {from} to a new plan."),
                (None, None) => "Your subscription moved to a new plan.".to_owned(),
            };
            let view = PlanChanged {
                frame: Frame::customer(
                    brand,
                    subject.clone(),
                    summary.clone(),
                    Action::new("View your subscription", &account),
                ),
                summary,
                from,
                to,
            };
            parts(&subject, &view, &PlanChangedText(&view))
        }
        Email::SubscriptionCanceled {
            plan,
            ends_at,
            ended,
        } => {
            let plan = given(plan);
            let (ends_on, ended_on) = match (ends_at.as_ref().map(day), ended) {
                (Some(at), false) => (Some(at), None),
                (at, _) => (None, at),
            };
            let subject = match &ends_on {
                Some(at) => format!("Your subscription will end on {at}"),
                None => "Your subscription has been cancelled".to_owned(),
            };
            let action = match ends_on {
                Some(_) => Action::new("Resume your subscription", &account),
                None => Action::new("View your account", &account),
            };
            let view = SubscriptionCanceled {
                frame: Frame::customer(
                    brand,
                    subject.clone(),
                    "Your subscription has been cancelled.".into(),
                    action,
                ),
                subscription: subscription_name(plan, brand),
                plan,
                ends_on,
                ended_on,
            };
            parts(&subject, &view, &SubscriptionCanceledText(&view))
        }
        Email::UsageThreshold {
            percent,
            alert,
            spent,
            period_end,
        } => {
            let alert = format_amount(alert.amount, &alert.currency);
            let spent = format_amount(spent.amount, &spent.currency);
            let subject = if *percent >= 100 {
                format!("Your usage reached your spend alert of {alert}")
            } else {
                format!("Your usage reached {percent}% of your spend alert of {alert}")
            };
            let view = UsageThreshold {
                frame: Frame::customer(
                    brand,
                    subject.clone(),
                    format!("Usage so far this period: {spent}."),
                    Action::new("View your usage", &brand.link("/account/usage")),
                ),
                percent: *percent,
                alert,
                spent,
                resets_on: period_end.as_ref().map(day),
            };
            parts(&subject, &view, &UsageThresholdText(&view))
        }
        Email::SecurityAlert {
            rule,
            summary,
            raised_at,
            instance,
        } => {
            let subject = format!("[{} alert] {rule} on {instance}", brand.product_name);
            let view = SecurityAlert {
                frame: Frame {
                    product_name: &brand.product_name,
                    // Alerts go to the operators, not to customers: no support address.
                    support_email: None,
                    preheader: summary.clone(),
                    heading: format!("Security alert: {rule}"),
                    action: Action::new("Open the security dashboard", &brand.link("/admin")),
                    reason: "You receive this alert because your address is in ALERT_EMAIL_TO."
                        .into(),
                },
                raised_at: raised_at.format("%-d %b %Y, %H:%M UTC").to_string(),
                rule,
                summary,
                instance,
            };
            parts(&subject, &view, &SecurityAlertText(&view))
        }
    }
}

/// Both parts of a message, under a subject that cannot break its header line.
fn parts(
    subject: &str,
    html: &impl Template,
    text: &impl Template,
) -> Result<Rendered, askama::Error> {
    let mut text = text.render()?;
    text.truncate(text.trim_end().len());
    text.push('\n');
    Ok(Rendered {
        subject: subject.chars().filter(|c| !c.is_control()).collect(),
        text,
        html: html.render()?,
    })
}

/// An optional fact that says something (a blank one reads as missing).
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// A link a reader can follow: `http(s)` only (a `javascript:` link is not shown).
fn web_link(value: &Option<String>) -> Option<&str> {
    given(value).filter(|raw| {
        url::Url::parse(raw).is_ok_and(|url| matches!(url.scheme(), "https" | "http"))
    })
}

/// "Pro subscription", or the product's name when the plan is not known.
fn subscription_name(plan: Option<&str>, brand: &Brand) -> String {
    format!("{} subscription", plan.unwrap_or(&brand.product_name))
}

/// A date as readers write it: `4 Dec 2026`.
fn day(at: &NaiveDateTime) -> String {
    at.format("%-d %b %Y").to_string()
}

/// A billing period: `4 Dec 2026 – 4 Jan 2027`, or its one known end.
fn period(start: Option<&NaiveDateTime>, end: Option<&NaiveDateTime>) -> Option<String> {
    match (start.map(day), end.map(day)) {
        (Some(start), Some(end)) => Some(format!("{start} – {end}")),
        (Some(start), None) => Some(format!("from {start}")),
        (None, Some(end)) => Some(format!("until {end}")),
        (None, None) => None,
    }
}

impl Brand {
    /// `path` on Tollgate's public address.
    fn link(&self, path: &str) -> String {
        format!("{}{path}", self.public_url.trim_end_matches('/'))
    }
}

/// The one thing a message asks its reader to do: its button (and, in text, its last link).
struct Action {
    label: &'static str,
    url: String,
}

impl Action {
    fn new(label: &'static str, url: &str) -> Self {
        Self {
            label,
            url: url.to_owned(),
        }
    }
}

/// What `templates/email/layout.html` shows around every message.
struct Frame<'a> {
    product_name: &'a str,
    /// Named in the footer when set.
    support_email: Option<&'a str>,
    /// The line a mail client shows next to the subject.
    preheader: String,
    heading: String,
    action: Action,
    /// Why the reader gets the e-mail (the HTML footer).
    reason: String,
}

impl<'a> Frame<'a> {
    fn customer(brand: &'a Brand, heading: String, preheader: String, action: Action) -> Self {
        Self {
            product_name: &brand.product_name,
            support_email: brand.support_email.as_deref(),
            preheader,
            heading,
            action,
            reason: format!(
                "You receive this e-mail because you have an account with {}.",
                brand.product_name
            ),
        }
    }
}

/// Each message's view is its HTML part; `<Name>Text` wraps it for the plain-text part, which
/// reads the same fields.
macro_rules! text_part {
    ($($text:ident => $view:ident),* $(,)?) => {$(
        impl<'a> std::ops::Deref for $text<'_, 'a> {
            type Target = $view<'a>;
            fn deref(&self) -> &$view<'a> {
                self.0
            }
        }
    )*};
}

text_part!(
    ReceiptText => Receipt,
    PaymentFailedText => PaymentFailed,
    TrialEndingText => TrialEnding,
    PlanChangedText => PlanChanged,
    SubscriptionCanceledText => SubscriptionCanceled,
    SecurityAlertText => SecurityAlert,
    UsageThresholdText => UsageThreshold,
);

#[derive(Template)]
#[template(path = "email/usage_threshold.html")]
struct UsageThreshold<'a> {
    frame: Frame<'a>,
    percent: i64,
    alert: String,
    spent: String,
    /// When the period ends and usage starts again from zero.
    resets_on: Option<String>,
}

#[derive(Template)]
#[template(path = "email/usage_threshold.txt")]
struct UsageThresholdText<'v, 'a>(&'v UsageThreshold<'a>);

#[derive(Template)]
#[template(path = "email/receipt.html")]
struct Receipt<'a> {
    frame: Frame<'a>,
    subject: String,
    amount: String,
    plan: Option<&'a str>,
    subscription: String,
    period: Option<String>,
    invoice_number: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "email/receipt.txt")]
struct ReceiptText<'v, 'a>(&'v Receipt<'a>);

#[derive(Template)]
#[template(path = "email/payment_failed.html")]
struct PaymentFailed<'a> {
    frame: Frame<'a>,
    amount: String,
    plan: Option<&'a str>,
    subscription: String,
    invoice_number: Option<&'a str>,
    has_pay_link: bool,
    next_attempt: Option<String>,
}

#[derive(Template)]
#[template(path = "email/payment_failed.txt")]
struct PaymentFailedText<'v, 'a>(&'v PaymentFailed<'a>);

#[derive(Template)]
#[template(path = "email/trial_ending.html")]
struct TrialEnding<'a> {
    frame: Frame<'a>,
    plan: Option<&'a str>,
    /// "the Pro plan", or the product's name.
    trial_of: String,
    trial_end: Option<String>,
}

#[derive(Template)]
#[template(path = "email/trial_ending.txt")]
struct TrialEndingText<'v, 'a>(&'v TrialEnding<'a>);

#[derive(Template)]
#[template(path = "email/plan_changed.html")]
struct PlanChanged<'a> {
    frame: Frame<'a>,
    summary: String,
    from: Option<&'a str>,
    to: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "email/plan_changed.txt")]
struct PlanChangedText<'v, 'a>(&'v PlanChanged<'a>);

#[derive(Template)]
#[template(path = "email/subscription_canceled.html")]
struct SubscriptionCanceled<'a> {
    frame: Frame<'a>,
    plan: Option<&'a str>,
    subscription: String,
    /// A cancellation at the end of the period: when access ends.
    ends_on: Option<String>,
    /// An ended subscription: when it ended, if known.
    ended_on: Option<String>,
}

#[derive(Template)]
#[template(path = "email/subscription_canceled.txt")]
struct SubscriptionCanceledText<'v, 'a>(&'v SubscriptionCanceled<'a>);

#[derive(Template)]
#[template(path = "email/security_alert.html")]
struct SecurityAlert<'a> {
    frame: Frame<'a>,
    rule: &'a str,
    summary: &'a str,
    instance: &'a str,
    raised_at: String,
}

#[derive(Template)]
#[template(path = "email/security_alert.txt")]
struct SecurityAlertText<'v, 'a>(&'v SecurityAlert<'a>);

#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("SMTP_URL {0}")]
    Url(crate::config::SmtpUrlError),
    #[error("SMTP_URL's host cannot be used for TLS")]
    Tls,
    #[error("SMTP_FROM is not a mailbox")]
    From,
}

/// Sends rendered e-mail through the SMTP relay of `SMTP_URL`. Its `Debug` names the relay
/// and the sender, never the credentials.
pub struct Mailer {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    /// Host, port and TLS mode (for `Debug`).
    relay: (String, u16, crate::config::SmtpTls),
    from: lettre::message::Mailbox,
    brand: Brand,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (host, port, tls) = &self.relay;
        f.debug_struct("Mailer")
            .field("host", host)
            .field("port", port)
            .field("tls", tls)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// The mailer for `settings`, or `None` when SMTP is not configured.
    pub fn new(
        settings: &crate::config::NotifySettings,
        public_url: &str,
    ) -> Result<Option<Self>, MailerError> {
        use crate::config::SmtpTls;
        use lettre::transport::smtp::authentication::Credentials;
        use secrecy::ExposeSecret as _;

        type Transport = lettre::AsyncSmtpTransport<lettre::Tokio1Executor>;
        let Some(smtp) = &settings.smtp else {
            return Ok(None);
        };
        let relay = smtp.relay().map_err(MailerError::Url)?;
        let tls_for = |host: &str| {
            lettre::transport::smtp::client::TlsParameters::new(host.to_owned())
                .map_err(|_| MailerError::Tls)
        };
        let tls = match relay.tls {
            // Required, not opportunistic: a relay (or a man in the middle) that does not
            // offer STARTTLS gets neither the password nor an e-mail.
            SmtpTls::StartTls => {
                lettre::transport::smtp::client::Tls::Required(tls_for(&relay.host)?)
            }
            SmtpTls::Implicit => {
                lettre::transport::smtp::client::Tls::Wrapper(tls_for(&relay.host)?)
            }
            SmtpTls::None => lettre::transport::smtp::client::Tls::None,
        };
        let mut builder = Transport::builder_dangerous(&relay.host)
            .port(relay.port)
            .tls(tls);
        if let Some((user, password)) = relay.credentials {
            builder =
                builder.credentials(Credentials::new(user, password.expose_secret().to_owned()));
        }
        let tls_mode = relay.tls;
        builder = builder.timeout(Some(settings.timeout));
        Ok(Some(Self {
            transport: builder.build(),
            relay: (relay.host, relay.port, tls_mode),
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
        // Customers' replies go to support; alerts go to the operators, who reply to no one.
        let customer = !matches!(message, Email::SecurityAlert { .. });
        if let Some(support) = self
            .brand
            .support_email
            .as_deref()
            .and_then(|s| s.parse().ok())
            .filter(|_| customer)
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
        self.transport
            .send(email)
            .await
            .map(|_| ())
            .map_err(smtp_failure)
    }
}

/// What a failed SMTP attempt means: a permanent refusal (5xx) is final, anything else is
/// retried. The reason names the server's code or lettre's own words (a closed connection, no
/// STARTTLS offered), never the server's text (it may quote addresses) and never credentials.
fn smtp_failure(err: lettre::transport::smtp::Error) -> super::worker::Failure {
    use super::worker::Failure;
    use crate::notify::Status;

    let code = err
        .status()
        .map(|code| code.to_string())
        .unwrap_or_default();
    if err.is_permanent() {
        Failure::Final(
            Status::Dead,
            format!("the mail server refused the message ({code})"),
        )
    } else if err.is_transient() {
        Failure::retry(format!("the mail server refused for now ({code})"))
    } else if err.is_timeout() {
        Failure::retry("the mail server timed out")
    } else if err.is_client() || err.is_tls() {
        Failure::retry(format!("the SMTP session failed: {err}"))
    } else {
        Failure::retry("the mail server could not be reached")
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn at(y: i32, m: u32, d: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(14, 3, 0)
            .unwrap()
    }

    fn brand() -> Brand {
        Brand {
            product_name: "Tollgate".into(),
            support_email: Some("support@example.com".into()),
            public_url: "https://billing.example.com/".into(),
        }
    }

    fn usd(amount: i64) -> Money {
        Money {
            amount,
            currency: "usd".into(),
        }
    }

    fn receipt() -> Email {
        Email::Receipt {
            amount: usd(2500),
            plan: Some("Pro".into()),
            period_start: Some(at(2026, 12, 4)),
            period_end: Some(at(2027, 1, 4)),
            invoice_number: Some("INV-0001".into()),
            invoice_url: Some("https://invoice.stripe.com/i/acct_1/test_1".into()),
        }
    }

    #[test]
    fn a_receipt_names_amount_plan_period_invoice_and_its_link() {
        let r = render(&receipt(), &brand()).unwrap();
        assert_eq!(r.subject, "Receipt for your Pro subscription — $25.00");
        assert_eq!(
            r.text,
            "Thank you for your payment\n\
             \n\
             We received your payment of $25.00 for your Pro subscription. This e-mail is your receipt.\n\
             \n\
             Amount paid: $25.00\n\
             Plan: Pro\n\
             Period: 4 Dec 2026 – 4 Jan 2027\n\
             Invoice: INV-0001\n\
             \n\
             View your invoice: https://invoice.stripe.com/i/acct_1/test_1\n\
             \n\
             Questions? Reply to this e-mail or write to support@example.com.\n\
             \n\
             — Tollgate\n"
        );
        for part in [
            "<title>Thank you for your payment</title>",
            ">Tollgate</td>",
            "<strong>$25.00</strong> for your Pro subscription",
            ">4 Dec 2026 – 4 Jan 2027</td>",
            ">INV-0001</td>",
            r#"<a href="https://invoice.stripe.com/i/acct_1/test_1" target="_blank" style="display:inline-block;"#,
            ">View your invoice</a>",
            r#"<a href="mailto:support@example.com""#,
        ] {
            assert!(r.html.contains(part), "{part} in {}", r.html);
        }
    }

    #[test]
    fn a_receipt_without_its_optional_facts_reads_naturally() {
        let brand = Brand {
            product_name: "Acme Cloud".into(),
            support_email: None,
            public_url: "https://billing.example.com".into(),
        };
        let message = Email::Receipt {
            amount: Money {
                amount: 900,
                currency: "eur".into(),
            },
            plan: Some("  ".into()),
            period_start: None,
            period_end: Some(at(2027, 1, 4)),
            invoice_number: None,
            invoice_url: None,
        };
        let r = render(&message, &brand).unwrap();
        assert_eq!(
            r.subject,
            "Receipt for your Acme Cloud subscription — €9.00"
        );
        assert_eq!(
            r.text,
            "Thank you for your payment\n\
             \n\
             We received your payment of €9.00 for your Acme Cloud subscription. This e-mail is your receipt.\n\
             \n\
             Amount paid: €9.00\n\
             Period: until 4 Jan 2027\n\
             \n\
             View your account: https://billing.example.com/account\n\
             \n\
             — Acme Cloud\n"
        );
        assert!(!r.html.contains("Questions?"), "no support address");
        assert!(
            r.html
                .contains(r#"href="https://billing.example.com/account""#)
        );
    }

    #[test]
    fn a_failed_payment_leads_to_the_pay_link_and_names_the_next_attempt() {
        let message = Email::PaymentFailed {
            amount: usd(2500),
            plan: Some("Pro".into()),
            invoice_number: Some("INV-0002".into()),
            pay_url: Some("https://invoice.stripe.com/i/acct_1/test_2".into()),
            next_attempt_at: Some(at(2026, 12, 7)),
        };
        let r = render(&message, &brand()).unwrap();
        assert_eq!(
            r.subject,
            "Payment failed: please update your payment details"
        );
        assert_eq!(
            r.text,
            "Your payment did not go through\n\
             \n\
             We could not collect your payment of $25.00 for your Pro subscription. Please pay the invoice at the link below — you can use a different card there — to keep your subscription active. If nothing changes, we will try again on 7 Dec 2026.\n\
             \n\
             Amount due: $25.00\n\
             Plan: Pro\n\
             Invoice: INV-0002\n\
             Next attempt: 7 Dec 2026\n\
             \n\
             Pay your invoice: https://invoice.stripe.com/i/acct_1/test_2\n\
             \n\
             Questions? Reply to this e-mail or write to support@example.com.\n\
             \n\
             — Tollgate\n"
        );
        assert!(r.html.contains(
            r#"<a href="https://invoice.stripe.com/i/acct_1/test_2" target="_blank" style="display:inline-block;"#
        ));
        assert!(r.html.contains(">Pay your invoice</a>"));
        assert!(r.html.contains("we will try again on 7 Dec 2026."));
    }

    #[test]
    fn a_failed_payment_without_a_pay_link_leads_to_the_account() {
        let message = Email::PaymentFailed {
            amount: usd(2500),
            plan: None,
            invoice_number: None,
            pay_url: None,
            next_attempt_at: None,
        };
        let r = render(&message, &brand()).unwrap();
        assert_eq!(
            r.text,
            "Your payment did not go through\n\
             \n\
             We could not collect your payment of $25.00 for your Tollgate subscription. Please update your payment details in your account to keep your subscription active.\n\
             \n\
             Amount due: $25.00\n\
             \n\
             Update your payment details: https://billing.example.com/account\n\
             \n\
             Questions? Reply to this e-mail or write to support@example.com.\n\
             \n\
             — Tollgate\n"
        );
    }

    #[test]
    fn every_message_has_a_specific_subject() {
        let cases = [
            (
                Email::TrialEnding {
                    plan: Some("Pro".into()),
                    trial_end: Some(at(2026, 12, 12)),
                },
                "Your trial ends on 12 Dec 2026",
            ),
            (
                Email::TrialEnding {
                    plan: None,
                    trial_end: None,
                },
                "Your trial ends soon",
            ),
            (
                Email::PlanChanged {
                    from: Some("Pro".into()),
                    to: Some("Team".into()),
                },
                "Your plan changed to Team",
            ),
            (
                Email::PlanChanged {
                    from: None,
                    to: None,
                },
                "Your plan has changed",
            ),
            (
                Email::SubscriptionCanceled {
                    plan: Some("Pro".into()),
                    ends_at: Some(at(2027, 1, 4)),
                    ended: false,
                },
                "Your subscription will end on 4 Jan 2027",
            ),
            (
                Email::SubscriptionCanceled {
                    plan: Some("Pro".into()),
                    ends_at: Some(at(2027, 1, 4)),
                    ended: true,
                },
                "Your subscription has been cancelled",
            ),
            (
                Email::SubscriptionCanceled {
                    plan: None,
                    ends_at: None,
                    ended: false,
                },
                "Your subscription has been cancelled",
            ),
            (
                Email::SecurityAlert {
                    rule: "webhook_signature_failures".into(),
                    summary: "12 deliveries failed verification.".into(),
                    raised_at: at(2026, 12, 4),
                    instance: "web-1".into(),
                },
                "[Tollgate alert] webhook_signature_failures on web-1",
            ),
        ];
        for (message, subject) in cases {
            let r = render(&message, &brand()).unwrap();
            assert_eq!(r.subject, subject);
            for part in [&r.text, &r.html] {
                assert!(!part.contains("None"), "{part}");
                assert!(!part.contains("Some("), "{part}");
            }
        }
    }

    #[test]
    fn html_escapes_what_customers_and_stripe_wrote_and_text_keeps_it() {
        let hostile = "<script>alert(1)</script>";
        let message = Email::Receipt {
            amount: usd(100),
            plan: Some(hostile.into()),
            period_start: None,
            period_end: None,
            invoice_number: Some("\"><img src=x onerror=alert(1)>".into()),
            invoice_url: Some("javascript:alert(1)".into()),
        };
        let r = render(&message, &brand()).unwrap();
        assert!(!r.html.contains("<script"), "{}", r.html);
        assert!(!r.html.contains("<img"), "{}", r.html);
        assert!(r.html.contains("&#60;script&#62;") || r.html.contains("&lt;script&gt;"));
        assert!(
            !r.html.contains("javascript:"),
            "not a web link: not linked"
        );
        assert!(
            r.text.contains("Plan: <script>alert(1)</script>\n"),
            "{}",
            r.text
        );
        assert!(
            r.text
                .contains("View your account: https://billing.example.com/account")
        );
        let evil = Email::PlanChanged {
            from: None,
            to: Some("Team\r\nBcc: victim@example.com".into()),
        };
        let subject = render(&evil, &brand()).unwrap().subject;
        assert_eq!(subject, "Your plan changed to TeamBcc: victim@example.com");
    }

    fn settings(url: &str) -> crate::config::NotifySettings {
        let mut settings = crate::config::NotifySettings::defaults();
        settings.smtp = Some(crate::config::SmtpSettings {
            url: url.to_owned().into(),
            from: "Billing <billing@example.com>".into(),
        });
        settings.support_email = Some("support@example.com".into());
        settings
    }

    #[test]
    fn smtp_urls_require_starttls_unless_told_otherwise_and_hide_the_password() {
        for (url, tls) in [
            (
                "smtp://DUMMYuser:DUMMYpass@mail.example.com:587",
                "Required",
            ),
            ("smtps://DUMMYuser:DUMMYpass@mail.example.com", "Wrapper"),
            ("smtp://DUMMYuser:DUMMYpass@127.0.0.1:2525?tls=none", "None"),
        ] {
            let mailer = Mailer::new(&settings(url), "https://billing.example.com")
                .unwrap()
                .unwrap();
            let transport = format!("{:?}", mailer.transport);
            assert!(transport.contains(tls), "{url}: {transport}");
            for debug in [transport, format!("{mailer:?}")] {
                assert!(!debug.contains("DUMMYpass"), "{debug}");
            }
        }
        let none = crate::config::NotifySettings::defaults();
        assert!(Mailer::new(&none, "https://x").unwrap().is_none());
        let err = Mailer::new(&settings("smtp://h?tls=off"), "https://x").unwrap_err();
        assert!(err.to_string().starts_with("SMTP_URL"), "{err}");
    }

    #[test]
    fn a_message_carries_its_outbox_id_and_replies_go_to_support_but_not_for_alerts() {
        let mailer = Mailer::new(
            &settings("smtp://127.0.0.1:2525?tls=none"),
            "https://billing.example.com",
        )
        .unwrap()
        .unwrap();
        let wire = |message: &Email| {
            let built = mailer
                .message("msg_0123", "Ada <ada@example.net>", message)
                .unwrap();
            String::from_utf8(built.formatted()).unwrap()
        };
        let receipt = wire(&receipt());
        assert!(
            receipt.contains("Message-ID: <msg_0123@example.com>\r\n"),
            "{receipt}"
        );
        assert!(
            receipt.contains("Reply-To: support@example.com\r\n"),
            "{receipt}"
        );
        assert!(
            receipt.contains("To: Ada <ada@example.net>\r\n"),
            "{receipt}"
        );
        let alert = wire(&Email::SecurityAlert {
            rule: "r".into(),
            summary: "s".into(),
            raised_at: at(2026, 12, 4),
            instance: "web-1".into(),
        });
        assert!(!alert.contains("Reply-To"), "{alert}");
    }
}
