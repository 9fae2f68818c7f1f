//! Typed values stored in text columns (statuses, roles, Stripe ids): the diesel glue that
//! writes them as their text and reads them back, on SQLite and PostgreSQL alike. The text is
//! the same the columns always held: no migration.

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;

use crate::stripe_id::StripeId;

/// Stores `$ty` as the text of its `as_str()` and reads it back with its `FromStr` (whose error
/// is a read error: a CHECK constraint keeps other text out of such a column). The type derives
/// `AsExpression` and `FromSqlRow` with `#[diesel(sql_type = Text)]`.
macro_rules! stored_as_text {
    ($ty:ty) => {
        impl<DB> diesel::serialize::ToSql<diesel::sql_types::Text, DB> for $ty
        where
            DB: diesel::backend::Backend,
            str: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
        {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, DB>,
            ) -> diesel::serialize::Result {
                <str as diesel::serialize::ToSql<diesel::sql_types::Text, DB>>::to_sql(
                    self.as_str(),
                    out,
                )
            }
        }

        impl<DB> diesel::deserialize::FromSql<diesel::sql_types::Text, DB> for $ty
        where
            DB: diesel::backend::Backend,
            String: diesel::deserialize::FromSql<diesel::sql_types::Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> diesel::deserialize::Result<Self> {
                let text =
                    <String as diesel::deserialize::FromSql<diesel::sql_types::Text, DB>>::from_sql(
                        bytes,
                    )?;
                Ok(text.parse::<$ty>()?)
            }
        }
    };
}
pub(crate) use stored_as_text;

impl<K, DB> ToSql<Text, DB> for StripeId<K>
where
    K: 'static,
    DB: Backend,
    str: ToSql<Text, DB>,
{
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
        <str as ToSql<Text, DB>>::to_sql(self.expose(), out)
    }
}

impl<K, DB> FromSql<Text, DB> for StripeId<K>
where
    K: 'static,
    DB: Backend,
    String: FromSql<Text, DB>,
{
    fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
        Ok(Self::new(<String as FromSql<Text, DB>>::from_sql(bytes)?))
    }
}
