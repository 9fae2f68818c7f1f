//! `/admin/cancellations`: why customers cancel — counts by reason and the latest comments.

use actix_web::{HttpResponse, web};
use askama::Template;

use crate::billing::cancellations::{self, ReasonCount, RecentCancellation};
use crate::error::AppError;
use crate::web::AppState;
use crate::web::console::ConsoleUser;
use crate::web::pages::{PageContext, datetime_seconds, render};
use crate::web::session::TypedSession;

/// Most recent cancellations the page lists.
const LATEST: i64 = 50;

struct LatestView {
    email: String,
    reason: String,
    comment: Option<String>,
    at: String,
}

impl From<RecentCancellation> for LatestView {
    fn from(c: RecentCancellation) -> Self {
        Self {
            email: c.email,
            reason: c.feedback.unwrap_or_else(|| "—".into()),
            comment: c.comment,
            at: datetime_seconds(&c.at),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/cancellations.html")]
struct CancellationsPage {
    ctx: PageContext,
    total: i64,
    counts: Vec<ReasonCount>,
    latest: Vec<LatestView>,
}

pub async fn list(
    state: web::Data<AppState>,
    session: TypedSession,
    viewer: ConsoleUser,
) -> Result<HttpResponse, AppError> {
    let (counts, latest) = cancellations::summary(&state.db, LATEST).await?;
    render(&CancellationsPage {
        ctx: PageContext::new(&session, Some(&viewer.0))?,
        total: counts.iter().map(|c| c.count).sum(),
        counts,
        latest: latest.into_iter().map(LatestView::from).collect(),
    })
}
