//! One file per table: the row struct, a `New*` insert struct and the finder functions.

/// `(key id, values)` of the key-id column `$key` of `$table`, for every key id but `$beside`
/// (`""`: every key id, as key ids are never empty), key id order: two index ranges, below and
/// above `$beside` (one `<> $beside`, or an `OR` of the two, is a scan of the whole index on
/// SQLite), so counting what is left under old keys costs what is left, not the table.
macro_rules! key_counts_beside {
    ($conn:expr, $table:path, $key:expr, $beside:expr) => {{
        let mut counts: Vec<(String, i64)> = $table
            .filter($key.lt($beside))
            .group_by($key)
            .select(($key, diesel::dsl::count_star()))
            .order($key.asc())
            .load($conn)?;
        counts.extend(
            $table
                .filter($key.gt($beside))
                .group_by($key)
                .select(($key, diesel::dsl::count_star()))
                .order($key.asc())
                .load::<(String, i64)>($conn)?,
        );
        Ok(counts)
    }};
}

pub mod alert;
pub mod audit_chain;
pub mod billing_customer;
pub mod byok_key;
pub mod cancellation_feedback;
pub mod encryption_key;
pub mod invoice;
pub mod job_lease;
pub mod notification;
pub mod payment_card;
pub mod plan;
pub mod plan_change;
pub mod plan_meter;
pub mod plan_trial_option;
pub mod promotion;
pub mod security_event;
pub mod security_event_search;
pub mod service_token;
pub mod session;
pub mod setting;
pub mod stripe_operation;
pub mod stripe_refetch;
pub mod subscription;
pub mod two_factor;
pub mod usage;
pub mod usage_reservation;
pub mod usage_view;
pub mod user;
pub mod webhook_endpoint;
pub mod webhook_event;
