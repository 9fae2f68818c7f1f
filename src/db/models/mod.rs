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

/// One compare-and-swap of a batch (`rotate-key`): row `id` takes `new` if it still holds
/// `old`, the value that was read.
#[derive(Debug, Clone, Copy)]
pub struct Swap<'a, V: ?Sized> {
    pub id: i64,
    pub old: &'a V,
    pub new: &'a V,
}

/// Applies a batch of [`Swap`]s to column `$value` (SQL type `$sql`) of `$table`, keyed by
/// `$id`, setting `$key` to `$key_id` on every row replaced; evaluates to how many were.
/// A row whose value changed since it was read (the application replaced it) is left alone.
///
/// PostgreSQL takes the batch as one `UPDATE … FROM unnest(ids, olds, news)`: one round trip
/// for the batch, not one per row. SQLite, in process, runs the per-row statement.
macro_rules! swap_values {
    ($conn:expr, $table:ident { $id:ident, $value:ident: $sql:ty, $key:ident }, $swaps:expr, $key_id:expr) => {{
        use diesel::prelude::*;
        let swaps: &[$crate::db::models::Swap<'_, _>] = $swaps;
        let key_id: &str = $key_id;
        match $conn {
            $crate::db::DbConnection::Sqlite(conn) => {
                let mut replaced = 0;
                for swap in swaps {
                    replaced += diesel::update(
                        $table::table
                            .filter($table::$id.eq(swap.id))
                            .filter($table::$value.eq(swap.old)),
                    )
                    .set(($table::$value.eq(swap.new), $table::$key.eq(key_id)))
                    .execute(conn)?;
                }
                Ok(replaced)
            }
            $crate::db::DbConnection::Postgresql(conn) => {
                use diesel::sql_types::{Array, BigInt, Text};
                let ids: Vec<i64> = swaps.iter().map(|swap| swap.id).collect();
                let old: Vec<_> = swaps.iter().map(|swap| swap.old).collect();
                let new: Vec<_> = swaps.iter().map(|swap| swap.new).collect();
                Ok(diesel::sql_query(concat!(
                    "UPDATE ",
                    stringify!($table),
                    " AS t SET ",
                    stringify!($value),
                    " = v.new, ",
                    stringify!($key),
                    " = $4 FROM unnest($1, $2, $3) AS v(id, old, new) ",
                    "WHERE t.",
                    stringify!($id),
                    " = v.id AND t.",
                    stringify!($value),
                    " = v.old"
                ))
                .bind::<Array<BigInt>, _>(ids)
                .bind::<Array<$sql>, _>(old)
                .bind::<Array<$sql>, _>(new)
                .bind::<Text, _>(key_id)
                .execute(conn)?)
            }
        }
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
