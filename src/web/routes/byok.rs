//! `/account/keys`: a customer's own AI-provider API keys. Add, replace, delete; always masked.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use secrecy::SecretString;
use serde::Deserialize;

use crate::accounts::User;
use crate::audit::Actor;
use crate::error::AppError;
use crate::vault::{self, ApiKey, Provider, VaultError};
use crate::web::AppState;
use crate::web::csrf::{CsrfForm, NoFields};
use crate::web::forms::FormErrors;
use crate::web::pages::{
    ConfirmPage, PageContext, datetime, render, render_with_status, see_other,
};
use crate::web::session::{CurrentUser, FlashKind, TypedSession};

struct KeyView {
    provider: &'static str,
    label: &'static str,
    masked: String,
    added: String,
    last_used: Option<String>,
}

#[derive(Template)]
#[template(path = "account/keys.html")]
struct KeysPage {
    ctx: PageContext,
    keys: Vec<KeyView>,
    providers: [Provider; 2],
    selected: &'static str,
    errors: FormErrors,
}

async fn keys_page(
    state: &AppState,
    session: &TypedSession,
    user: &User,
    selected: &'static str,
    errors: FormErrors,
) -> Result<KeysPage, AppError> {
    let user_id = user.id;
    let keys = state
        .db
        .run(move |conn| vault::list_keys(conn, user_id))
        .await?;
    let keys = keys
        .into_iter()
        .map(|key| KeyView {
            provider: key.provider.as_str(),
            label: key.provider.label(),
            masked: key.masked,
            added: datetime(&key.created_at),
            last_used: key.last_used_at.as_ref().map(datetime),
        })
        .collect();
    Ok(KeysPage {
        ctx: PageContext::with_form(session, Some(user))?,
        keys,
        providers: Provider::ALL,
        selected,
        errors,
    })
}

pub async fn list(
    state: web::Data<AppState>,
    session: TypedSession,
    user: CurrentUser,
) -> Result<HttpResponse, AppError> {
    render(
        &keys_page(
            &state,
            &session,
            &user.0,
            Provider::Anthropic.as_str(),
            FormErrors::new(),
        )
        .await?,
    )
}

#[derive(Deserialize)]
pub struct SaveKeyForm {
    provider: String,
    api_key: SecretString,
}

/// "Choose Anthropic or OpenAI as the provider."
fn choose_a_provider() -> String {
    let labels: Vec<_> = Provider::ALL.iter().map(|p| p.label()).collect();
    format!("Choose {} as the provider.", labels.join(" or "))
}

/// The provider and key, or the form's messages and the provider to keep selected. A
/// rejected key is never echoed back: the field comes back empty.
fn parse_submission(
    provider: &str,
    api_key: SecretString,
) -> Result<(Provider, ApiKey), (&'static str, FormErrors)> {
    let mut errors = FormErrors::new();
    let Some(provider) = Provider::parse(provider) else {
        errors.field("provider", choose_a_provider());
        return Err(("", errors));
    };
    match ApiKey::parse(provider, api_key) {
        Ok(key) => Ok((provider, key)),
        Err(err) => {
            errors.field("api_key", err.to_string());
            Err((provider.as_str(), errors))
        }
    }
}

fn vault_error(err: VaultError) -> AppError {
    AppError::internal(err)
}

pub async fn save(
    state: web::Data<AppState>,
    session: TypedSession,
    CurrentUser(user): CurrentUser,
    actor: Actor,
    form: CsrfForm<SaveKeyForm>,
) -> Result<HttpResponse, AppError> {
    let SaveKeyForm { provider, api_key } = form.0;
    let (provider, key) = match parse_submission(&provider, api_key) {
        Ok(parsed) => parsed,
        Err((selected, errors)) => {
            let page = keys_page(&state, &session, &user, selected, errors).await?;
            return render_with_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    };
    let (st, user_id) = (state.clone(), user.id);
    let masked = state
        .db
        .run(move |conn| vault::save_key(conn, &st.keyring, &actor, user_id, provider, &key))
        .await
        .map_err(vault_error)?;
    session.flash(
        FlashKind::Success,
        format!("Your {} key {masked} is saved.", provider.label()),
    )?;
    Ok(see_other("/account/keys"))
}

/// `GET /account/keys/{provider}/delete`: which key goes, before it goes. Only one's own.
pub async fn confirm_delete(
    state: web::Data<AppState>,
    session: TypedSession,
    user: CurrentUser,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let provider = Provider::parse(&path).ok_or(AppError::NotFound)?;
    let user_id = user.0.id;
    let key = state
        .db
        .run(move |conn| vault::list_keys(conn, user_id))
        .await?
        .into_iter()
        .find(|key| key.provider == provider)
        .ok_or(AppError::NotFound)?;
    let label = provider.label();
    render(&ConfirmPage {
        ctx: PageContext::with_form(&session, Some(&user.0))?,
        title: format!("Delete your {label} key?"),
        consequences: vec![
            format!("Your {label} key {} will be deleted for good.", key.masked),
            format!("Agents that use your {label} key stop working until you add a new one."),
        ],
        action: format!("/account/keys/{}/delete", provider.as_str()),
        operation_id: None,
        confirm: "Delete key",
        keep: "Keep my key",
        keep_href: "/account/keys",
        admin: false,
    })
}

pub async fn delete(
    state: web::Data<AppState>,
    session: TypedSession,
    CurrentUser(user): CurrentUser,
    actor: Actor,
    path: web::Path<String>,
    _form: CsrfForm<NoFields>,
) -> Result<HttpResponse, AppError> {
    let provider = Provider::parse(&path).ok_or(AppError::NotFound)?;
    let user_id = user.id;
    let deleted = state
        .db
        .run(move |conn| vault::delete_key(conn, &actor, user_id, provider))
        .await
        .map_err(vault_error)?;
    if !deleted {
        return Err(AppError::NotFound);
    }
    session.flash(
        FlashKind::Info,
        format!("Your {} key is deleted.", provider.label()),
    )?;
    Ok(see_other("/account/keys"))
}
