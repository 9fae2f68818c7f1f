//! Table definitions, identical for SQLite and PostgreSQL (see `migrations/`).

diesel::table! {
    users (id) {
        id -> BigInt,
        email -> Text,
        password_hash -> Text,
        role -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        last_login_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    sessions (key_hash) {
        key_hash -> Text,
        user_id -> Nullable<BigInt>,
        state -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    security_events (id) {
        id -> BigInt,
        occurred_at -> Timestamp,
        kind -> Text,
        severity -> Text,
        actor -> Nullable<Text>,
        ip -> Nullable<Text>,
        details -> Text,
        count -> BigInt,
        last_seen_at -> Timestamp,
        aggregate_key -> Nullable<Text>,
        request_id -> Nullable<Text>,
        chain_id -> Nullable<Text>,
        chain_seq -> Nullable<BigInt>,
        hash -> Nullable<Text>,
    }
}

diesel::table! {
    audit_chains (chain_id) {
        chain_id -> Text,
        last_sequence -> BigInt,
        last_hash -> Text,
        checkpoint_sequence -> BigInt,
        checkpoint_hash -> Text,
        updated_at -> Timestamp,
    }
}

diesel::joinable!(sessions -> users (user_id));

diesel::table! {
    two_factor (user_id) {
        user_id -> BigInt,
        secret -> Binary,
        key_id -> Text,
        confirmed_at -> Nullable<Timestamp>,
        last_used_step -> Nullable<BigInt>,
        pending_binding -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    recovery_codes (id) {
        id -> BigInt,
        user_id -> BigInt,
        code_hash -> Text,
        used_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::joinable!(two_factor -> users (user_id));
diesel::joinable!(recovery_codes -> users (user_id));

diesel::table! {
    byok_keys (id) {
        id -> BigInt,
        user_id -> BigInt,
        provider -> Text,
        secret -> Binary,
        key_id -> Text,
        masked -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    service_tokens (id) {
        id -> BigInt,
        name -> Text,
        scopes -> Text,
        token_hash -> Text,
        display_id -> Text,
        created_at -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
        hash_key_id -> Nullable<Text>,
    }
}

diesel::table! {
    settings (name) {
        name -> Text,
        value -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    plans (id) {
        id -> BigInt,
        slug -> Text,
        name -> Text,
        description -> Text,
        amount -> BigInt,
        currency -> Text,
        billing_interval -> Text,
        trial_days -> BigInt,
        features -> Text,
        active -> Bool,
        stripe_product_id -> Nullable<Text>,
        stripe_price_id -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        feature_lines -> Text,
        highlighted -> Bool,
        yearly_amount -> Nullable<BigInt>,
        stripe_yearly_price_id -> Nullable<Text>,
    }
}

diesel::table! {
    billing_customers (user_id) {
        user_id -> BigInt,
        stripe_customer_sealed -> Binary,
        key_id -> Text,
        stripe_customer_index -> Text,
        stripe_customer_masked -> Text,
        created_at -> Timestamp,
        index_key_id -> Nullable<Text>,
    }
}

diesel::table! {
    subscriptions (id) {
        id -> BigInt,
        user_id -> BigInt,
        stripe_subscription_id -> Text,
        plan_id -> Nullable<BigInt>,
        stripe_price_id -> Text,
        status -> Text,
        current_period_end -> Nullable<Timestamp>,
        cancel_at_period_end -> Bool,
        trial_end -> Nullable<Timestamp>,
        stripe_updated_at -> Timestamp,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    stripe_operations (id) {
        id -> BigInt,
        operation_key -> Text,
        user_id -> Nullable<BigInt>,
        kind -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    encryption_keys (key_id) {
        key_id -> Text,
        first_seen_at -> Timestamp,
    }
}

diesel::table! {
    alert_state (name) {
        name -> Text,
        last_raised_at -> Timestamp,
        last_count -> BigInt,
        window_secs -> BigInt,
    }
}

diesel::table! {
    webhook_endpoints (id) {
        id -> BigInt,
        public_id -> Text,
        url -> Text,
        description -> Text,
        event_types -> Text,
        secret -> Binary,
        key_id -> Text,
        previous_secret -> Nullable<Binary>,
        previous_key_id -> Nullable<Text>,
        previous_expires_at -> Nullable<Timestamp>,
        enabled -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    notifications (id) {
        id -> BigInt,
        message_id -> Text,
        dedupe_key -> Text,
        channel -> Text,
        event_type -> Text,
        user_id -> Nullable<BigInt>,
        endpoint_id -> Nullable<BigInt>,
        recipient -> Text,
        order_key -> Text,
        payload -> Text,
        status -> Text,
        attempts -> BigInt,
        next_attempt_at -> Timestamp,
        claimed_by -> Nullable<Text>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        sent_at -> Nullable<Timestamp>,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    webhook_events (id) {
        id -> BigInt,
        stripe_event_id -> Text,
        event_type -> Text,
        livemode -> Bool,
        stripe_created -> Timestamp,
        payload_sealed -> Binary,
        key_id -> Text,
        status -> Text,
        attempts -> BigInt,
        last_error -> Nullable<Text>,
        received_at -> Timestamp,
        processed_at -> Nullable<Timestamp>,
        signature_digest -> Nullable<Text>,
    }
}

diesel::table! {
    invoices (id) {
        id -> BigInt,
        user_id -> BigInt,
        stripe_invoice_id -> Text,
        stripe_subscription_id -> Nullable<Text>,
        number -> Nullable<Text>,
        status -> Text,
        amount_due -> BigInt,
        amount_paid -> BigInt,
        amount_remaining -> BigInt,
        currency -> Text,
        stripe_created -> Timestamp,
        period_start -> Nullable<Timestamp>,
        period_end -> Nullable<Timestamp>,
        hosted_invoice_url -> Nullable<Text>,
        invoice_pdf -> Nullable<Text>,
        payment_failed_at -> Nullable<Timestamp>,
        grace_ends_at -> Nullable<Timestamp>,
        stripe_updated_at -> Timestamp,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    plan_past_due_grace (plan_id) {
        plan_id -> BigInt,
        days -> BigInt,
    }
}

diesel::table! {
    plan_changes (id) {
        id -> BigInt,
        user_id -> BigInt,
        stripe_subscription_id -> Text,
        stripe_schedule_id -> Text,
        to_plan_id -> BigInt,
        to_price_id -> Text,
        to_quantity -> BigInt,
        effective_at -> Timestamp,
        status -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    subscription_quantities (stripe_subscription_id) {
        stripe_subscription_id -> Text,
        quantity -> BigInt,
        stripe_updated_at -> Timestamp,
    }
}

diesel::table! {
    plan_seats (plan_id) {
        plan_id -> BigInt,
        min_quantity -> BigInt,
        max_quantity -> BigInt,
    }
}

diesel::joinable!(byok_keys -> users (user_id));
diesel::joinable!(billing_customers -> users (user_id));
diesel::joinable!(subscriptions -> users (user_id));
diesel::table! {
    plan_trial_options (plan_id) {
        plan_id -> BigInt,
        without_card -> Bool,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    payment_cards (user_id) {
        user_id -> BigInt,
        card_sealed -> Binary,
        key_id -> Text,
        stripe_updated_at -> Timestamp,
        updated_at -> Timestamp,
        removed -> Bool,
    }
}

diesel::table! {
    cancellation_feedback (id) {
        id -> BigInt,
        user_id -> BigInt,
        stripe_subscription_id -> Text,
        feedback -> Nullable<Text>,
        comment -> Nullable<Text>,
        operation_key -> Text,
        created_at -> Timestamp,
    }
}

diesel::joinable!(subscriptions -> plans (plan_id));
diesel::joinable!(notifications -> webhook_endpoints (endpoint_id));
diesel::table! {
    coupons (id) {
        id -> BigInt,
        operation_id -> Text,
        stripe_coupon_id -> Text,
        name -> Text,
        percent_off -> Nullable<BigInt>,
        amount_off -> Nullable<BigInt>,
        currency -> Nullable<Text>,
        duration -> Text,
        duration_in_months -> Nullable<BigInt>,
        redeem_by -> Nullable<Timestamp>,
        max_redemptions -> Nullable<BigInt>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    promotion_codes (id) {
        id -> BigInt,
        operation_id -> Text,
        coupon_id -> BigInt,
        code -> Text,
        stripe_promotion_code_id -> Text,
        expires_at -> Nullable<Timestamp>,
        max_redemptions -> Nullable<BigInt>,
        active -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    subscription_discounts (id) {
        id -> BigInt,
        user_id -> BigInt,
        stripe_subscription_id -> Text,
        stripe_discount_id -> Text,
        stripe_coupon_id -> Nullable<Text>,
        stripe_promotion_code_id -> Nullable<Text>,
        starts_at -> Nullable<Timestamp>,
        ends_at -> Nullable<Timestamp>,
        removed -> Bool,
        stripe_updated_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::joinable!(promotion_codes -> coupons (coupon_id));

diesel::table! {
    stripe_refetches (stripe_object_id) {
        stripe_object_id -> Text,
        object_type -> Text,
        user_id -> BigInt,
        requested_at -> Timestamp,
        attempts -> BigInt,
    }
}

diesel::joinable!(invoices -> users (user_id));
diesel::joinable!(plan_past_due_grace -> plans (plan_id));
diesel::table! {
    subscription_past_due (stripe_subscription_id) {
        stripe_subscription_id -> Text,
        since -> Timestamp,
    }
}

diesel::table! {
    usage_meters (feature) {
        feature -> Text,
        unit_name -> Text,
        event_name -> Text,
        stripe_meter_id -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    plan_meters (id) {
        id -> BigInt,
        plan_id -> BigInt,
        feature -> Text,
        included -> BigInt,
        package_size -> BigInt,
        package_amount -> BigInt,
        quota -> Nullable<BigInt>,
        fail_open -> Bool,
        stripe_price_id -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    usage_records (id) {
        id -> BigInt,
        user_id -> BigInt,
        feature -> Text,
        quantity -> BigInt,
        idempotency_key -> Text,
        occurred_at -> Timestamp,
        byok -> Bool,
        reservation_id -> Nullable<Text>,
        service -> Text,
        forwarded_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    usage_outbox (usage_record_id) {
        usage_record_id -> BigInt,
        attempts -> BigInt,
        next_attempt_at -> Timestamp,
        last_error -> Nullable<Text>,
    }
}

diesel::table! {
    usage_counters (user_id, feature, period_end) {
        user_id -> BigInt,
        feature -> Text,
        period_end -> Timestamp,
        used -> BigInt,
        reserved -> BigInt,
    }
}

diesel::table! {
    usage_reservations (id) {
        id -> Text,
        user_id -> BigInt,
        feature -> Text,
        quantity -> BigInt,
        period_end -> Timestamp,
        state -> Text,
        expires_at -> Timestamp,
        committed_quantity -> Nullable<BigInt>,
        service -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    usage_spend_limits (user_id) {
        user_id -> BigInt,
        alert_amount -> Nullable<BigInt>,
        cap_amount -> Nullable<BigInt>,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    plan_spend_caps (plan_id) {
        plan_id -> BigInt,
        cap_amount -> BigInt,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// How many rows a table holds, kept by triggers (`users`).
    row_counts (name) {
        name -> Text,
        total -> BigInt,
    }
}

diesel::table! {
    security_event_hours (hour, severity, lane) {
        hour -> Timestamp,
        severity -> Text,
        lane -> Text,
        occurrences -> BigInt,
    }
}

diesel::table! {
    job_leases (name) {
        name -> Text,
        holder -> Text,
        expires_at -> Timestamp,
        runs -> BigInt,
    }
}

diesel::table! {
    usage_thresholds_sent (user_id, period_end, percent) {
        user_id -> BigInt,
        period_end -> Timestamp,
        percent -> BigInt,
        sent_at -> Timestamp,
    }
}

diesel::joinable!(plan_meters -> plans (plan_id));
diesel::joinable!(plan_meters -> usage_meters (feature));
diesel::joinable!(usage_outbox -> usage_records (usage_record_id));
diesel::joinable!(plan_spend_caps -> plans (plan_id));

diesel::allow_tables_to_appear_in_same_query!(
    users,
    job_leases,
    row_counts,
    security_event_hours,
    sessions,
    security_events,
    audit_chains,
    byok_keys,
    service_tokens,
    settings,
    plans,
    billing_customers,
    subscriptions,
    stripe_operations,
    webhook_events,
    two_factor,
    recovery_codes,
    webhook_endpoints,
    notifications,
    stripe_refetches,
    invoices,
    plan_past_due_grace,
    plan_trial_options,
    payment_cards,
    cancellation_feedback,
    plan_changes,
    subscription_quantities,
    plan_seats,
    coupons,
    promotion_codes,
    subscription_discounts,
    subscription_past_due,
    usage_meters,
    plan_meters,
    usage_records,
    usage_outbox,
    usage_counters,
    usage_reservations,
    usage_spend_limits,
    plan_spend_caps,
    usage_thresholds_sent
);
