//! `FormErrors`: what a server-rendered form says went wrong, in the order of its fields.
//!
//! One value feeds both halves of `templates/forms.html`: the error summary at the top of the
//! page (a link to each failing field, focused on load) and, on each field, its message and the
//! `aria-invalid` / `aria-describedby` attributes. A field is named by its element id; its
//! message gets the id `{field}-error` and its help text, if any, `{field}-help`.

use std::collections::HashMap;

/// One message: about a field (linked from the summary), or about the whole form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormError {
    pub field: Option<&'static str>,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormErrors(Vec<FormError>);

impl FormErrors {
    pub fn new() -> Self {
        Self::default()
    }

    /// A message about one field (its element id). A second message for the field is ignored:
    /// the first problem is the one to fix first.
    pub fn field(&mut self, field: &'static str, message: impl Into<String>) {
        if !self.has(field) {
            self.0.push(FormError {
                field: Some(field),
                message: message.into(),
            });
        }
    }

    /// A message about the form as a whole (listed in the summary, linked to nothing).
    pub fn form(&mut self, message: impl Into<String>) {
        self.0.push(FormError {
            field: None,
            message: message.into(),
        });
    }

    /// Messages keyed by field name (the key `form` for the whole form), listed in `order`;
    /// fields `order` does not name follow, alphabetically, so none is ever dropped.
    pub fn from_map(mut messages: HashMap<&'static str, String>, order: &[&'static str]) -> Self {
        let mut errors = Self::new();
        if let Some(message) = messages.remove("form") {
            errors.form(message);
        }
        for field in order {
            if let Some(message) = messages.remove(field) {
                errors.field(field, message);
            }
        }
        let mut rest: Vec<_> = messages.into_iter().collect();
        rest.sort_unstable();
        for (field, message) in rest {
            errors.field(field, message);
        }
        errors
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, FormError> {
        self.0.iter()
    }

    /// The message for `field`, if it failed.
    pub fn get(&self, field: impl AsRef<str>) -> Option<&str> {
        let field = field.as_ref();
        self.0
            .iter()
            .find(|e| e.field == Some(field))
            .map(|e| e.message.as_str())
    }

    pub fn has(&self, field: impl AsRef<str>) -> bool {
        self.get(field).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_the_forms_order_and_lose_nothing() {
        let messages = HashMap::from([
            ("zeta", "z".to_owned()),
            ("amount", "a".to_owned()),
            ("form", "whole form".to_owned()),
            ("name", "n".to_owned()),
            ("beta", "b".to_owned()),
        ]);
        let errors = FormErrors::from_map(messages, &["name", "amount"]);
        let order: Vec<_> = errors.iter().map(|e| e.field).collect();
        assert_eq!(
            order,
            [
                None,
                Some("name"),
                Some("amount"),
                Some("beta"),
                Some("zeta")
            ]
        );
        assert_eq!(errors.get("amount"), Some("a"));
        assert_eq!(errors.get("slug"), None);
    }

    #[test]
    fn the_first_message_for_a_field_wins() {
        let mut errors = FormErrors::new();
        errors.field("email", "first");
        errors.field("email", "second");
        assert_eq!(errors.iter().count(), 1);
        assert_eq!(errors.get("email"), Some("first"));
    }
}
