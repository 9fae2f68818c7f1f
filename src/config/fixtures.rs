//! Variables for the unit tests: a map standing in for the environment, holding valid keys
//! unless a test says otherwise.

use std::collections::HashMap;

use super::{Config, ConfigError};
use crate::secret::encode_base64;

pub(super) fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name: &str| map.get(name).cloned()
}

pub(super) fn with_keys(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, String)> {
    let mut all = vec![
        ("SECRET_KEY", encode_base64(&[1; 64])),
        ("ENCRYPTION_KEY", encode_base64(&[2; 32])),
        ("TOKEN_PEPPER", encode_base64(&[3; 32])),
    ];
    all.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    all
}

pub(super) fn config(pairs: Vec<(&'static str, String)>) -> Result<Config, ConfigError> {
    let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Config::from_vars(&vars(&refs))
}

pub(super) fn config_err(extra: &[(&'static str, &'static str)]) -> String {
    config(with_keys(extra)).unwrap_err().to_string()
}
