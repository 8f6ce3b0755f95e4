-- The shop: catalogue, stock ledger, orders with their lines and timeline, payments, refunds,
-- received webhook events and Idempotency-Key records.
--
-- Invariants the database itself holds (the code relies on them, tests check them):
-- * stock never goes below 0 (products_stock_check → 409 insufficient_stock);
-- * for every product, stock = initial_stock + Σ stock_movements.delta (every change of stock is
--   one ledger row written in the same statement batch, with the stock it left);
-- * an order's status is one of five, and the timestamps agree with it (orders_*_check);
-- * a webhook event id is stored once (primary key), an idempotency key once per user.

CREATE TABLE products (
    id            uuid        PRIMARY KEY,
    sku           text        NOT NULL CHECK (char_length(sku) BETWEEN 1 AND 64),
    name          text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description   text        NULL CHECK (char_length(description) <= 5000),
    price_cents   bigint      NOT NULL CHECK (price_cents BETWEEN 0 AND 1000000000),
    currency      text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    stock         integer     NOT NULL,
    -- The stock given at creation (not itself a movement): the reconciliation's starting point.
    initial_stock integer     NOT NULL CHECK (initial_stock >= 0),
    active        boolean     NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT products_stock_check CHECK (stock >= 0)
);

-- SKUs are unique case-insensitively ("ab-1" and "AB-1" are one SKU).
CREATE UNIQUE INDEX products_sku_key ON products (lower(sku));
-- The catalogue: active products, one index per sort (keyset (key, id)).
CREATE INDEX products_active_created ON products (created_at DESC, id DESC) WHERE active;
CREATE INDEX products_active_name ON products (lower(name), id) WHERE active;
CREATE INDEX products_active_price ON products (price_cents, id) WHERE active;

CREATE TABLE stock_movements (
    -- Ledger order (newest first = seq DESC): stable even for movements of one transaction.
    seq         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          uuid        NOT NULL UNIQUE,
    product_id  uuid        NOT NULL REFERENCES products (id),
    delta       integer     NOT NULL CHECK (delta <> 0),
    stock_after integer     NOT NULL CHECK (stock_after >= 0),
    kind        text        NOT NULL CHECK (kind IN ('adjustment', 'order_reserved', 'order_released')),
    reason      text        NOT NULL CHECK (char_length(reason) BETWEEN 1 AND 200),
    order_id    uuid        NULL,
    actor_id    uuid        NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'adjustment') = (order_id IS NULL))
);

CREATE INDEX stock_movements_product ON stock_movements (product_id, seq DESC);
CREATE INDEX stock_movements_order ON stock_movements (order_id) WHERE order_id IS NOT NULL;

-- Human-friendly, increasing order numbers ("10001", "10002", …). Gaps are possible (a rolled
-- back order consumes a number); numbers are never reused.
CREATE SEQUENCE order_number_seq START WITH 10001;

CREATE TABLE orders (
    id              uuid        PRIMARY KEY,
    number          bigint      NOT NULL UNIQUE DEFAULT nextval('order_number_seq'),
    user_id         uuid        NOT NULL REFERENCES users (id),
    status          text        NOT NULL CHECK (status IN ('pending_payment', 'paid', 'shipped', 'delivered', 'cancelled')),
    currency        text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    total_cents     bigint      NOT NULL CHECK (total_cents >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    paid_at         timestamptz NULL,
    shipped_at      timestamptz NULL,
    delivered_at    timestamptz NULL,
    cancelled_at    timestamptz NULL,
    cancel_reason   text        NULL CHECK (cancel_reason IN ('user', 'admin', 'expired')),
    tracking_number text        NULL CHECK (char_length(tracking_number) BETWEEN 1 AND 100),
    CONSTRAINT orders_cancelled_check CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL AND cancel_reason IS NOT NULL)),
    CONSTRAINT orders_paid_check CHECK (status IN ('pending_payment', 'cancelled') OR paid_at IS NOT NULL),
    CONSTRAINT orders_shipped_check CHECK (status NOT IN ('shipped', 'delivered') OR shipped_at IS NOT NULL)
);

ALTER SEQUENCE order_number_seq OWNED BY orders.number;

-- A user's orders and the admin list, newest first (keyset (created_at, id) DESC).
CREATE INDEX orders_user_created ON orders (user_id, created_at DESC, id DESC);
CREATE INDEX orders_created ON orders (created_at DESC, id DESC);
CREATE INDEX orders_status_created ON orders (status, created_at DESC, id DESC);
-- The expiry sweep: unpaid orders by deadline.
CREATE INDEX orders_pending_expiry ON orders (expires_at) WHERE status = 'pending_payment';

ALTER TABLE stock_movements ADD CONSTRAINT stock_movements_order_fkey
    FOREIGN KEY (order_id) REFERENCES orders (id);

CREATE TABLE order_items (
    order_id         uuid    NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    -- Position of the line in the order (0-based, after summing lines of one product).
    line             integer NOT NULL CHECK (line >= 0),
    product_id       uuid    NOT NULL REFERENCES products (id),
    sku              text    NOT NULL,
    name             text    NOT NULL,
    unit_price_cents bigint  NOT NULL CHECK (unit_price_cents >= 0),
    quantity         integer NOT NULL CHECK (quantity > 0),
    line_total_cents bigint  NOT NULL CHECK (line_total_cents = unit_price_cents * quantity),
    PRIMARY KEY (order_id, line),
    UNIQUE (order_id, product_id)
);

CREATE TABLE order_events (
    seq         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          uuid        NOT NULL UNIQUE,
    order_id    uuid        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    type        text        NOT NULL,
    from_status text        NULL,
    to_status   text        NULL,
    actor       text        NOT NULL CHECK (actor IN ('user', 'admin', 'system', 'payment_provider')),
    detail      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX order_events_order ON order_events (order_id, seq);

-- Money received: one row per applied `payment.succeeded` (at most one per order).
CREATE TABLE payments (
    id                uuid        PRIMARY KEY,
    order_id          uuid        NOT NULL REFERENCES orders (id),
    provider_event_id text        NOT NULL UNIQUE,
    amount_cents      bigint      NOT NULL CHECK (amount_cents >= 0),
    currency          text        NOT NULL,
    -- succeeded: applied to a pending order; late: arrived for a cancelled order (refunded).
    status            text        NOT NULL CHECK (status IN ('succeeded', 'late')),
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX payments_one_applied ON payments (order_id) WHERE status = 'succeeded';

-- Money owed back: one refund per payment to return.
CREATE TABLE refunds (
    id                uuid        PRIMARY KEY,
    order_id          uuid        NOT NULL REFERENCES orders (id),
    payment_id        uuid        NOT NULL UNIQUE REFERENCES payments (id),
    amount_cents      bigint      NOT NULL CHECK (amount_cents >= 0),
    currency          text        NOT NULL,
    status            text        NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    provider_event_id text        NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX refunds_order ON refunds (order_id, created_at);

-- Every signed webhook event, stored once by the provider's id, with what it did.
CREATE TABLE webhook_events (
    id          text        PRIMARY KEY CHECK (char_length(id) BETWEEN 1 AND 255),
    type        text        NOT NULL,
    order_id    uuid        NULL,
    payload     jsonb       NOT NULL,
    outcome     text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_events_order ON webhook_events (order_id) WHERE order_id IS NOT NULL;

-- Idempotency-Key records (per user, 24 h). The row is inserted in the order's transaction, so a
-- concurrent duplicate blocks on it and then reads the committed response; a crashed request
-- rolls it back with everything else.
CREATE TABLE idempotency_keys (
    user_id        uuid        NOT NULL REFERENCES users (id),
    key            text        NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    -- SHA-256 of the canonical request body.
    request_hash   bytea       NOT NULL,
    -- The first response, set before the inserting transaction commits (so a committed row
    -- always has one; NULL is only ever seen by that transaction itself).
    response_status smallint   NULL,
    response_type  text        NULL,
    response_body  bytea       NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    PRIMARY KEY (user_id, key)
);

CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
