-- Creates invoices and their lines (numeric money, non-negative amounts, lines deleted with their invoice).
CREATE TABLE invoices (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    number        text NOT NULL,
    customer_name text NOT NULL,
    project_id    bigint REFERENCES projects (id) ON DELETE SET NULL,
    created_by    bigint NOT NULL REFERENCES users (id),
    currency      char(3) NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    status        text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'issued', 'paid', 'void')),
    issued_on     date,
    due_date      date,
    total         numeric(14, 2) NOT NULL DEFAULT 0 CHECK (total >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT invoices_number_key UNIQUE (number),
    CONSTRAINT invoices_issued_check CHECK (status = 'draft' OR issued_on IS NOT NULL),
    CONSTRAINT invoices_due_date_check CHECK (due_date IS NULL OR issued_on IS NULL OR due_date >= issued_on)
);

CREATE INDEX invoices_project_id_idx ON invoices (project_id);
CREATE INDEX invoices_created_by_idx ON invoices (created_by);

CREATE TABLE invoice_lines (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invoice_id   bigint NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,
    position     integer NOT NULL CHECK (position > 0),
    description  text NOT NULL,
    quantity     numeric(12, 3) NOT NULL DEFAULT 1 CHECK (quantity > 0),
    unit_price   numeric(12, 2) NOT NULL CHECK (unit_price >= 0),
    amount       numeric(14, 2) GENERATED ALWAYS AS (round(quantity * unit_price, 2)) STORED,
    CONSTRAINT invoice_lines_amount_check CHECK (amount >= 0),
    CONSTRAINT invoice_lines_invoice_position_key UNIQUE (invoice_id, position)
);
