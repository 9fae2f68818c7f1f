//! Why customers cancel: the reason a customer may give when cancelling (one of Stripe's
//! `cancellation_details.feedback` values, and an optional comment), sent to Stripe with the
//! cancellation and kept locally; the console's counts by reason and latest comments.

use chrono::NaiveDateTime;
use stripe_billing::subscription::{
    CancelSubscriptionCancellationDetails, CancelSubscriptionCancellationDetailsFeedback,
    UpdateSubscriptionCancellationDetails, UpdateSubscriptionCancellationDetailsFeedback,
};

use crate::accounts::UserId;
use crate::db::models::cancellation_feedback::{self, NewCancellationFeedback};
use crate::db::{Db, DbConnection, DbError};

/// Longest comment kept, in characters.
pub const MAX_COMMENT_CHARS: usize = 500;

/// Stripe's `cancellation_details.feedback` values, with the words the form shows.
pub const FEEDBACK: [(&str, &str); 8] = [
    ("too_expensive", "It's too expensive"),
    ("missing_features", "Some features are missing"),
    ("switched_service", "I'm switching to another service"),
    ("unused", "I don't use it enough"),
    ("too_complex", "It's too complicated"),
    ("low_quality", "Quality was less than expected"),
    (
        "customer_service",
        "Customer service was less than expected",
    ),
    ("other", "Other reason"),
];

/// The words for a feedback value (the value itself when unknown).
pub fn label(feedback: &str) -> &str {
    FEEDBACK
        .iter()
        .find(|(value, _)| *value == feedback)
        .map_or(feedback, |(_, label)| label)
}

/// What a customer said when cancelling; both parts optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reason {
    feedback: Option<&'static str>,
    comment: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReasonError {
    #[error("Choose one of the listed reasons.")]
    UnknownFeedback,
    #[error("Keep the comment under 500 characters.")]
    CommentTooLong,
}

impl Reason {
    /// Parses the form's fields: an empty reason or comment is none.
    pub fn parse(feedback: &str, comment: &str) -> Result<Self, ReasonError> {
        let feedback = match feedback.trim() {
            "" => None,
            given => Some(
                FEEDBACK
                    .iter()
                    .map(|(value, _)| *value)
                    .find(|value| *value == given)
                    .ok_or(ReasonError::UnknownFeedback)?,
            ),
        };
        let comment = comment.trim();
        if comment.chars().count() > MAX_COMMENT_CHARS {
            return Err(ReasonError::CommentTooLong);
        }
        Ok(Self {
            feedback,
            comment: (!comment.is_empty()).then(|| comment.to_owned()),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.feedback.is_none() && self.comment.is_none()
    }

    pub fn feedback(&self) -> Option<&'static str> {
        self.feedback
    }

    /// As Stripe's `cancellation_details`.
    pub fn to_stripe(&self) -> UpdateSubscriptionCancellationDetails {
        UpdateSubscriptionCancellationDetails {
            comment: self.comment.clone(),
            feedback: self.feedback.and_then(|f| {
                f.parse::<UpdateSubscriptionCancellationDetailsFeedback>()
                    .ok()
            }),
            ..UpdateSubscriptionCancellationDetails::new()
        }
    }

    /// As Stripe's `cancellation_details` on an immediate cancellation (a past-due
    /// subscription ends at once).
    pub fn to_stripe_on_cancel(&self) -> CancelSubscriptionCancellationDetails {
        CancelSubscriptionCancellationDetails {
            comment: self.comment.clone(),
            feedback: self.feedback.and_then(|f| {
                f.parse::<CancelSubscriptionCancellationDetailsFeedback>()
                    .ok()
            }),
            ..CancelSubscriptionCancellationDetails::new()
        }
    }

    /// Records the reason for `subscription`, once per `operation_key` (a replayed request
    /// records it once). Nothing is recorded for an empty reason.
    pub fn record(
        &self,
        conn: &mut DbConnection,
        user_id: UserId,
        subscription: &str,
        operation_key: &str,
        at: NaiveDateTime,
    ) -> Result<(), DbError> {
        if self.is_empty() {
            return Ok(());
        }
        cancellation_feedback::insert_once(
            conn,
            &NewCancellationFeedback {
                user_id,
                stripe_subscription_id: subscription,
                feedback: self.feedback,
                comment: self.comment.as_deref(),
                operation_key,
                created_at: at,
            },
        )?;
        Ok(())
    }
}

/// One reason's count, for the console.
pub struct ReasonCount {
    pub feedback: Option<String>,
    pub label: String,
    pub count: i64,
}

/// One cancellation, for the console.
pub struct RecentCancellation {
    pub email: String,
    pub feedback: Option<String>,
    pub comment: Option<String>,
    pub at: NaiveDateTime,
}

/// How many cancellations gave each reason, and the newest `limit`.
pub async fn summary(
    db: &Db,
    limit: i64,
) -> Result<(Vec<ReasonCount>, Vec<RecentCancellation>), DbError> {
    db.run(move |conn| {
        let counts = cancellation_feedback::counts(conn)?
            .into_iter()
            .map(|(feedback, count)| ReasonCount {
                label: feedback
                    .as_deref()
                    .map_or_else(|| "No reason given".to_owned(), |f| label(f).to_owned()),
                feedback,
                count,
            })
            .collect();
        let latest = cancellation_feedback::latest(conn, limit)?
            .into_iter()
            .map(|(row, email)| RecentCancellation {
                email,
                feedback: row.feedback.as_deref().map(|f| label(f).to_owned()),
                comment: row.comment,
                at: row.created_at,
            })
            .collect();
        Ok((counts, latest))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_stripes_values_and_comments_are_bounded() {
        let reason = Reason::parse("too_expensive", "  cheaper elsewhere ").unwrap();
        assert_eq!(reason.feedback(), Some("too_expensive"));
        assert_eq!(reason.comment.as_deref(), Some("cheaper elsewhere"));
        assert!(Reason::parse("", "").unwrap().is_empty());
        assert_eq!(
            Reason::parse("because", ""),
            Err(ReasonError::UnknownFeedback)
        );
        assert_eq!(
            Reason::parse("", &"x".repeat(501)),
            Err(ReasonError::CommentTooLong)
        );
        assert!(Reason::parse("", &"é".repeat(500)).is_ok());
        for (value, _) in FEEDBACK {
            let stripe = Reason::parse(value, "").unwrap().to_stripe();
            assert_eq!(
                stripe.feedback.map(|f| f.as_str().to_owned()).as_deref(),
                Some(value)
            );
        }
    }
}
