//! A plan's metered components, as the rest of Tollgate reads them.

use crate::db::models::usage;
use crate::db::{DbConnection, DbError};

use super::Rate;

/// One metered feature of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// The feature key services report (`tokens`).
    pub feature: String,
    /// What one unit is called, plural (`tokens`).
    pub unit_name: String,
    pub rate: Rate,
    /// The most units per period reservations may hold and use (`None`: no quota).
    pub quota: Option<i64>,
    /// What a reservation answers when Tollgate cannot decide.
    pub fail_open: bool,
    /// The feature's Stripe meter's event name.
    pub event_name: String,
    pub stripe_meter_id: Option<String>,
    pub stripe_price_id: Option<String>,
}

/// The metered components of plan `plan_id`, by feature.
pub fn of_plan(conn: &mut DbConnection, plan_id: i64) -> Result<Vec<Component>, DbError> {
    Ok(usage::components_of_plan(conn, plan_id)?
        .into_iter()
        .map(|(component, meter)| Component::from_rows(component, meter))
        .collect())
}

impl Component {
    /// The component a plan's row and its feature's meter describe.
    pub fn from_rows(component: usage::PlanMeterRow, meter: usage::UsageMeterRow) -> Self {
        Self {
            feature: component.feature,
            unit_name: meter.unit_name,
            rate: Rate {
                included: component.included,
                package_size: component.package_size,
                package_amount: component.package_amount,
            },
            quota: component.quota,
            fail_open: component.fail_open,
            event_name: meter.event_name,
            stripe_meter_id: meter.stripe_meter_id,
            stripe_price_id: component.stripe_price_id,
        }
    }
}
