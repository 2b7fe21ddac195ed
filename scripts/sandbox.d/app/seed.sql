-- The sandbox's data: a small multi-tenant shop, like the seeds' application.
CREATE TABLE tenant (
    id serial PRIMARY KEY,
    name text NOT NULL
);
CREATE TABLE product (
    id serial PRIMARY KEY,
    tenant_id int NOT NULL REFERENCES tenant(id),
    name text NOT NULL,
    price numeric(10, 2) NOT NULL,
    active boolean NOT NULL DEFAULT true
);
CREATE TABLE job (
    id serial PRIMARY KEY,
    payload text NOT NULL,
    done_by text,
    done_at timestamptz
);
CREATE TABLE worker (
    name text PRIMARY KEY,
    pid int NOT NULL,
    seen timestamptz NOT NULL
);

INSERT INTO tenant (name) SELECT 'store ' || i FROM generate_series(1, 20) AS i;
INSERT INTO product (tenant_id, name, price, active)
SELECT 1 + (i % 20), 'product ' || i, (i % 500) + 0.99, i % 7 <> 0
FROM generate_series(1, 50000) AS i;
INSERT INTO job (payload) SELECT 'job ' || i FROM generate_series(1, 100) AS i;
ANALYZE;
