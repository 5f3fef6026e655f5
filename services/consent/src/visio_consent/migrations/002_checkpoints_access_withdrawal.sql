-- Consent, second step: faster batched appends, the service's own API keys, and what the right
-- of access and the withdrawal need to know about each appointment, kept beside the chain.

-- 1. The chain head moves once per INSERT statement instead of once per row.
--
-- 001's row-level trigger locked and updated chain_head for every row: a batch of 100 rows
-- rewrote the head 100 times. This statement-level trigger checks the whole batch in one pass
-- (seq runs on from the head, each prev_hash is the hash of the row before it, the first one's
-- the head's) and moves the head once. It runs AFTER the rows are in, under the head lock, so
-- the guarantee is the same: a statement that does not extend the head is rolled back whole.
DROP TRIGGER ledger_extend_head ON ledger;
DROP FUNCTION ledger_extend_head();

CREATE FUNCTION ledger_extend_head() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = consent, pg_temp AS $$
DECLARE
    head_seq bigint;
    head_hash text;
    bad_seq bigint;
    last_seq bigint;
    last_hash text;
BEGIN
    SELECT h.seq, h.hash INTO head_seq, head_hash FROM chain_head h WHERE h.id FOR UPDATE;
    SELECT n.seq INTO bad_seq
    FROM (
        SELECT a.seq, a.prev_hash,
               lag(a.hash, 1, head_hash) OVER w AS parent_hash,
               head_seq + row_number() OVER w AS wanted_seq
        FROM appended a
        WINDOW w AS (ORDER BY a.seq)
    ) n
    WHERE n.seq <> n.wanted_seq OR n.prev_hash <> n.parent_hash
    ORDER BY n.seq
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'consent.ledger: record seq % does not extend the chain head (seq %)',
            bad_seq, head_seq
            USING ERRCODE = 'serialization_failure',
                  HINT = 'Take the head with lock_chain_head() in the same transaction first.';
    END IF;
    SELECT a.seq, a.hash INTO last_seq, last_hash FROM appended a ORDER BY a.seq DESC LIMIT 1;
    IF FOUND THEN
        UPDATE chain_head SET seq = last_seq, hash = last_hash WHERE id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER ledger_extend_head
    AFTER INSERT ON ledger
    REFERENCING NEW TABLE AS appended
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_extend_head();

REVOKE ALL ON FUNCTION ledger_extend_head() FROM PUBLIC;

-- 2. API keys of the systems that call consent's HTTP API. Stored as SHA-256 of the key; created
-- with an owner connection (`visio-rdv consent api-key create`): the service only reads them.
CREATE TABLE api_keys (
    key_hash text PRIMARY KEY CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    name text NOT NULL CHECK (name <> ''),
    scopes text[] NOT NULL
        CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['consent:read', 'consent:withdraw']),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- 3. Each appointment's context, beside the chain and pseudonymous: the subject_ref it belongs
-- to now (a contact correction moves it), its time zone (dates in the right of access are shown
-- in it), its correlation id, latest revision and CGU version (a withdrawal event carries them).
-- No name, no email: kept as long as the ledger itself.
CREATE TABLE appointments (
    appointment_id uuid PRIMARY KEY,
    correlation_id uuid NOT NULL,
    revision integer NOT NULL CHECK (revision >= 1),
    subject_ref text NOT NULL,
    timezone text NOT NULL,
    cgu_version text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX appointments_subject_ref_idx ON appointments (subject_ref);

-- Appointments recorded before this migration: their context is rebuilt from the chain. Their
-- correlation id and time zone were not kept, so the appointment id and UTC stand in (an access
-- export then shows UTC times, which are right, only less friendly).
INSERT INTO appointments (appointment_id, correlation_id, revision, subject_ref, timezone,
                          cgu_version)
SELECT DISTINCT ON (appointment_id)
       appointment_id, appointment_id, (payload ->> 'revision')::integer,
       payload ->> 'subject_ref', 'UTC', payload ->> 'cgu_version'
FROM ledger
WHERE kind = 'cgu_accepted'
ORDER BY appointment_id, seq DESC;

-- Withdrawals and contact corrections look records up by kind within an appointment; this
-- index serves the plain appointment lookups too, so 001's narrower one goes (one index less
-- to maintain on every append).
CREATE INDEX ledger_appointment_kind_idx ON ledger (appointment_id, kind, seq);
DROP INDEX ledger_appointment_idx;

GRANT SELECT ON api_keys TO visio_consent;
GRANT SELECT, INSERT, UPDATE ON appointments TO visio_consent;
-- A corrected name or address replaces the one kept beside the chain (never the chain).
GRANT UPDATE (email, first_name, last_name) ON subjects TO visio_consent;
