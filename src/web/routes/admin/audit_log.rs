//! `/admin/security`: the audit log with filters (minimum severity, kind, actor, address, time
//! range) and keyset pages, and `/admin/security/export`, the same selection as a CSV or JSON
//! file (admins only, audited as `audit_exported`). A bad filter answers 400 with the page and
//! what to fix.

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::security::EventView;
use crate::accounts::User;
use crate::audit::query::{self, ExportFormat, Filter, FilterError, PAGE_SIZE, RawFilter};
use crate::audit::{Actor, Kind, Severity};
use crate::db::models::security_event_search::Position;
use crate::error::AppError;
use crate::web::AppState;
use crate::web::console::ConsoleUser;
use crate::web::pages::{PageContext, render_with_status};
use crate::web::session::{AdminUser, TypedSession};

/// The query string: the filter, and where the page starts.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(flatten)]
    filter: RawFilter,
    /// Older than this id.
    before: Option<String>,
    /// Newer than this id.
    after: Option<String>,
    size: Option<String>,
    /// The export's format.
    format: Option<String>,
}

#[derive(Template)]
#[template(path = "admin/security_events.html")]
struct EventsPage {
    ctx: PageContext,
    /// The fields as typed (refilled into the form).
    form: RawFilter,
    error: Option<String>,
    severities: Vec<&'static str>,
    kinds: Vec<&'static str>,
    events: Vec<EventView>,
    filtered: bool,
    newer_href: Option<String>,
    older_href: Option<String>,
    /// The filter as a query string (export links keep it).
    filter_query: String,
}

/// `?before=`/`?after=` as a page position, `size` as a page size: numbers or 400.
fn position(query: &ListQuery) -> Result<(Position, i64), AppError> {
    let id = |text: &Option<String>| {
        text.as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.parse::<i64>()
                    .map_err(|_| AppError::BadRequest("Page links carry a number."))
            })
            .transpose()
    };
    let position = match (id(&query.before)?, id(&query.after)?) {
        (Some(before), _) => Position::Before(before),
        (None, Some(after)) => Position::After(after),
        (None, None) => Position::Newest,
    };
    let size = id(&query.size)?.unwrap_or(PAGE_SIZE);
    Ok((position, size.clamp(1, query::PAGE_SIZE_MAX)))
}

fn page_shell(ctx: PageContext, form: RawFilter, error: Option<FilterError>) -> EventsPage {
    EventsPage {
        ctx,
        form,
        error: error.map(|err| err.to_string()),
        severities: Severity::ALL.iter().map(|s| s.as_str()).collect(),
        kinds: {
            let mut kinds: Vec<&'static str> = Kind::all().map(Kind::as_str).collect();
            kinds.sort_unstable();
            kinds
        },
        events: Vec::new(),
        filtered: false,
        newer_href: None,
        older_href: None,
        filter_query: String::new(),
    }
}

/// The filter's own query string (`a=b&…`, unset fields left out).
fn filter_query(filter: &Filter) -> String {
    serde_urlencoded::to_string(filter.to_raw()).unwrap_or_default()
}

fn bad_filter(
    session: &TypedSession,
    viewer: &User,
    raw: RawFilter,
    err: FilterError,
) -> Result<HttpResponse, AppError> {
    let ctx = PageContext::new(session, Some(viewer))?;
    render_with_status(StatusCode::BAD_REQUEST, &page_shell(ctx, raw, Some(err)))
}

pub async fn list(
    state: web::Data<AppState>,
    session: TypedSession,
    viewer: ConsoleUser,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let query = query.into_inner();
    let filter = match Filter::parse(&query.filter) {
        Ok(filter) => filter,
        Err(err) => return bad_filter(&session, &viewer.0, query.filter, err),
    };
    let (position, size) = position(&query)?;
    let found = filter.clone();
    let page = state
        .db
        .run(move |conn| query::page(conn, &found, position, size))
        .await?;
    let keep = filter_query(&filter);
    let href = |cursor: &str, id: i64| {
        let sep = if keep.is_empty() { "" } else { "&" };
        format!("/admin/security?{keep}{sep}{cursor}={id}&size={size}")
    };
    let mut view = page_shell(
        PageContext::new(&session, Some(&viewer.0))?,
        filter.to_raw(),
        None,
    );
    view.filtered = filter != Filter::default();
    view.newer_href = page.newer.map(|id| href("after", id));
    view.older_href = page.older.map(|id| href("before", id));
    view.events = page.events.into_iter().map(EventView::from).collect();
    view.filter_query = keep;
    render_with_status(StatusCode::OK, &view)
}

/// `tollgate-audit-20261205T010203Z.csv`.
fn file_name(format: ExportFormat) -> String {
    format!(
        "tollgate-audit-{}.{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        format.as_str()
    )
}

pub async fn export(
    state: web::Data<AppState>,
    session: TypedSession,
    admin: AdminUser,
    actor: Actor,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let query = query.into_inner();
    let format = query
        .format
        .as_deref()
        .and_then(ExportFormat::parse)
        .ok_or(AppError::BadRequest("Choose format=csv or format=json."))?;
    let filter = match Filter::parse(&query.filter) {
        Ok(filter) => filter,
        Err(err) => return bad_filter(&session, &admin.0, query.filter, err),
    };
    let export = state
        .db
        .run(move |conn| query::export(conn, &actor, &filter, format))
        .await
        .map_err(|err| match err {
            query::ExportError::Db(err) => AppError::from(err),
            other => AppError::internal(other),
        })?;
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, format.content_type()))
        .insert_header((
            CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}\"", file_name(format)),
        ))
        .insert_header(("X-Export-Rows", export.rows.to_string()))
        .insert_header(("X-Export-Truncated", export.truncated.to_string()))
        .body(export.body))
}
