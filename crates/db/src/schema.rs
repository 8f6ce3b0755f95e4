// @generated automatically by Diesel CLI.

diesel::table! {
    categories (id) {
        id -> Uuid,
        user_id -> Uuid,
        name -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    task_categories (task_id, category_id) {
        task_id -> Uuid,
        category_id -> Uuid,
    }
}

diesel::table! {
    tasks (id) {
        id -> Uuid,
        user_id -> Uuid,
        title -> Text,
        description -> Nullable<Text>,
        status -> Text,
        priority -> Int2,
        due_at -> Nullable<Timestamptz>,
        completed_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    audit_log (event_id) {
        event_id -> Uuid,
        event_type -> Text,
        actor_id -> Nullable<Uuid>,
        target_type -> Nullable<Text>,
        target_id -> Nullable<Uuid>,
        request_id -> Nullable<Text>,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        data -> Jsonb,
        occurred_at -> Timestamptz,
        recorded_at -> Timestamptz,
    }
}

diesel::table! {
    email_log (message_key) {
        message_key -> Text,
        kind -> Text,
        user_id -> Nullable<Uuid>,
        sent_at -> Timestamptz,
    }
}

diesel::table! {
    email_tokens (token_hash) {
        token_hash -> Bytea,
        user_id -> Uuid,
        purpose -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    outbox (id) {
        id -> Uuid,
        queue -> Text,
        payload -> Jsonb,
        created_at -> Timestamptz,
        dispatched_at -> Nullable<Timestamptz>,
        attempts -> Int4,
        last_error -> Nullable<Text>,
        next_push_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
        dead_at -> Nullable<Timestamptz>,
        epoch -> Int4,
        trace -> Nullable<Jsonb>,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Bytea,
        session_id -> Uuid,
        created_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    sessions (id) {
        id -> Uuid,
        user_id -> Uuid,
        created_at -> Timestamptz,
        last_used_at -> Timestamptz,
        expires_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        revoked_reason -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        ip -> Nullable<Text>,
    }
}

diesel::table! {
    identities (id) {
        id -> Uuid,
        user_id -> Uuid,
        provider -> Text,
        issuer -> Text,
        subject -> Text,
        email -> Nullable<Text>,
        created_at -> Timestamptz,
        last_login_at -> Timestamptz,
    }
}

diesel::table! {
    users (id) {
        id -> Uuid,
        email -> Text,
        name -> Text,
        password_hash -> Nullable<Text>,
        role -> Text,
        email_verified_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    products (id) {
        id -> Uuid,
        sku -> Text,
        name -> Text,
        description -> Nullable<Text>,
        price_cents -> Int8,
        currency -> Text,
        stock -> Int4,
        initial_stock -> Int4,
        active -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    stock_movements (seq) {
        seq -> Int8,
        id -> Uuid,
        product_id -> Uuid,
        delta -> Int4,
        stock_after -> Int4,
        kind -> Text,
        reason -> Text,
        order_id -> Nullable<Uuid>,
        actor_id -> Nullable<Uuid>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    orders (id) {
        id -> Uuid,
        number -> Int8,
        user_id -> Uuid,
        status -> Text,
        currency -> Text,
        total_cents -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        expires_at -> Timestamptz,
        paid_at -> Nullable<Timestamptz>,
        shipped_at -> Nullable<Timestamptz>,
        delivered_at -> Nullable<Timestamptz>,
        cancelled_at -> Nullable<Timestamptz>,
        cancel_reason -> Nullable<Text>,
        tracking_number -> Nullable<Text>,
    }
}

diesel::table! {
    order_items (order_id, line) {
        order_id -> Uuid,
        line -> Int4,
        product_id -> Uuid,
        sku -> Text,
        name -> Text,
        unit_price_cents -> Int8,
        quantity -> Int4,
        line_total_cents -> Int8,
    }
}

diesel::table! {
    order_events (seq) {
        seq -> Int8,
        id -> Uuid,
        order_id -> Uuid,
        #[sql_name = "type"]
        type_ -> Text,
        from_status -> Nullable<Text>,
        to_status -> Nullable<Text>,
        actor -> Text,
        detail -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    payments (id) {
        id -> Uuid,
        order_id -> Uuid,
        provider_event_id -> Text,
        amount_cents -> Int8,
        currency -> Text,
        status -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    refunds (id) {
        id -> Uuid,
        order_id -> Uuid,
        payment_id -> Uuid,
        amount_cents -> Int8,
        currency -> Text,
        status -> Text,
        provider_event_id -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_events (id) {
        id -> Text,
        #[sql_name = "type"]
        type_ -> Text,
        order_id -> Nullable<Uuid>,
        payload -> Jsonb,
        outcome -> Text,
        received_at -> Timestamptz,
    }
}

diesel::table! {
    idempotency_keys (user_id, key) {
        user_id -> Uuid,
        key -> Text,
        request_hash -> Bytea,
        response_status -> Nullable<Int2>,
        response_type -> Nullable<Text>,
        response_body -> Nullable<Bytea>,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::joinable!(categories -> users (user_id));
diesel::joinable!(email_tokens -> users (user_id));
diesel::joinable!(task_categories -> categories (category_id));
diesel::joinable!(task_categories -> tasks (task_id));
diesel::joinable!(tasks -> users (user_id));
diesel::joinable!(refresh_tokens -> sessions (session_id));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(identities -> users (user_id));
diesel::joinable!(stock_movements -> products (product_id));
diesel::joinable!(order_items -> orders (order_id));
diesel::joinable!(order_items -> products (product_id));
diesel::joinable!(order_events -> orders (order_id));
diesel::joinable!(orders -> users (user_id));
diesel::joinable!(payments -> orders (order_id));
diesel::joinable!(refunds -> orders (order_id));

diesel::allow_tables_to_appear_in_same_query!(
    audit_log,
    categories,
    email_log,
    email_tokens,
    idempotency_keys,
    identities,
    order_events,
    order_items,
    orders,
    outbox,
    payments,
    products,
    refresh_tokens,
    refunds,
    stock_movements,
    webhook_events,
    sessions,
    task_categories,
    tasks,
    users,
);
