//! What the admin console shows of a stored event: the payload with emails, phone numbers,
//! card data and client secrets masked, wherever in the object they are.

use serde_json::Value;

use crate::secret::{mask_card, mask_email};

/// Card fields that are never shown (beyond the last four digits).
const CARD_FIELDS: [&str; 7] = [
    "number",
    "cvc",
    "fingerprint",
    "exp_month",
    "exp_year",
    "iin",
    "network_token",
];

fn looks_like_email(text: &str) -> bool {
    text.contains('@') && text.parse::<email_address::EmailAddress>().is_ok()
}

/// The payload as it may be shown: the same shape, sensitive values masked.
pub fn masked(value: &Value) -> Value {
    mask_value(None, value)
}

fn mask_value(key: Option<&str>, value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), mask_value(Some(k), v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| mask_value(key, v)).collect()),
        Value::Null | Value::Bool(_) => value.clone(),
        scalar => {
            let text = match scalar {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match key {
                Some("last4" | "dynamic_last4") => {
                    Value::String(mask_card(&format!("000000000000{text}")))
                }
                Some(k) if CARD_FIELDS.contains(&k) => Value::String("***".into()),
                Some("phone" | "client_secret") => Value::String("***".into()),
                _ if looks_like_email(&text) => Value::String(mask_email(&text)),
                _ => scalar.clone(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::masked;
    use serde_json::json;

    #[test]
    fn emails_phones_card_data_and_client_secrets_are_masked_anywhere() {
        let payload = json!({
            "id": "evt_1",
            "data": { "object": {
                "customer_details": { "email": "jenny.rosen@example.com", "phone": "+15555550100", "name": "Jenny" },
                "receipt_email": "jenny.rosen@example.com",
                "payment_method_details": { "card": {
                    "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030,
                    "fingerprint": "Xt5EWLLDS7FJjR1c"
                }},
                "amount": 2500,
                "client_secret": "pi_1_secret_DUMMYvalue",
                "lines": [{ "description": "Pro", "email": "a@b.example" }]
            }}
        });
        let shown = masked(&payload).to_string();
        for hidden in [
            "jenny.rosen@",
            "+15555550100",
            "Xt5EWLLDS7FJjR1c",
            "2030",
            "a@b.example",
            "secret_DUMMYvalue",
        ] {
            assert!(!shown.contains(hidden), "{hidden} is shown: {shown}");
        }
        for kept in [
            "j***n@example.com",
            "************4242",
            "\"amount\":2500",
            "evt_1",
            "Jenny",
            "visa",
        ] {
            assert!(shown.contains(kept), "{kept} is missing: {shown}");
        }
    }
}
