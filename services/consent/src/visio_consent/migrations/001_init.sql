-- The consent ledger: an append-only, hash-chained record of CGU acceptance and recording
-- choices, and beside it the personal data that may be erased at the end of its retention.
--
-- Applied by visio_runtime.db.migrate as the NOLOGIN owner role visio_consent_owner with
-- search_path = consent; the service logs in as visio_consent.
--
-- Grant design. The login role never holds UPDATE on anything in the chain. It may INSERT into
-- the ledger and nothing else; the chain head moves only through the SECURITY DEFINER trigger
-- ledger_extend_head (owned by the owner role), which refuses any row that does not extend the
-- current head (seq = head + 1, prev_hash = head hash). To read the head under its lock before
-- computing hashes, the service calls lock_chain_head(), another SECURITY DEFINER function:
-- SELECT ... FOR UPDATE needs UPDATE privilege, which the login role must not have. So even a
-- buggy or compromised service cannot fork the chain, leave a gap or rewind the head; what it
-- could still write (a wrong hash) is caught by the verifier, which recomputes every hash.

CREATE TABLE processed_events (
    event_id uuid PRIMARY KEY,
    event_type text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- payload is the chained record itself; hash = sha256(prev_hash || RFC 8785 JCS(payload)).
-- The other columns repeat fields of the payload for queries; the verifier checks they agree.
CREATE TABLE ledger (
    seq bigint PRIMARY KEY CHECK (seq > 0),
    prev_hash text NOT NULL UNIQUE CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    recorded_at timestamptz NOT NULL,
    kind text NOT NULL,
    appointment_id uuid NOT NULL,
    source_event_id uuid NOT NULL,
    payload jsonb NOT NULL,
    UNIQUE (source_event_id, kind)
);
-- UNIQUE (prev_hash) above: two records can never claim the same predecessor, i.e. no fork.

CREATE INDEX ledger_appointment_idx ON ledger (appointment_id);
-- The right of access (CGU article 8) reads every record of one subject.
CREATE INDEX ledger_subject_ref_idx ON ledger ((payload ->> 'subject_ref'));

-- One row: the last record's seq and hash (genesis: seq 0, 64 zeros).
CREATE TABLE chain_head (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    seq bigint NOT NULL CHECK (seq >= 0),
    hash text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$')
);
INSERT INTO chain_head (id, seq, hash) VALUES (true, 0, repeat('0', 64));

-- Personal data beside the chain, never in it: who a subject_ref was, until retain_until.
-- Deleting these rows (erasure) leaves the chain and its verification intact.
CREATE TABLE subjects (
    subject_ref text NOT NULL,
    appointment_id uuid NOT NULL,
    email text NOT NULL,
    first_name text NOT NULL,
    last_name text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    retain_until timestamptz NOT NULL,
    PRIMARY KEY (subject_ref, appointment_id)
);
CREATE INDEX subjects_retain_until_idx ON subjects (retain_until);

-- Append-only, for everyone: the owner and a superuser included (the latter can disable the
-- trigger; signed checkpoints and the verifier are what catch that).
CREATE FUNCTION ledger_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'consent.ledger is append-only: % refused', TG_OP
        USING HINT = 'Correct a record by appending a new one; history is never rewritten.';
END
$$;

CREATE TRIGGER ledger_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- Every inserted row must extend the head, which it then becomes. The head row is locked
-- FOR UPDATE, so concurrent writers queue instead of forking the chain.
CREATE FUNCTION ledger_extend_head() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = consent, pg_temp AS $$
DECLARE
    head_seq bigint;
    head_hash text;
BEGIN
    SELECT h.seq, h.hash INTO head_seq, head_hash FROM chain_head h WHERE h.id FOR UPDATE;
    IF NEW.seq <> head_seq + 1 OR NEW.prev_hash <> head_hash THEN
        RAISE EXCEPTION 'consent.ledger: record seq % does not extend the chain head (seq %)',
            NEW.seq, head_seq
            USING ERRCODE = 'serialization_failure',
                  HINT = 'Take the head with lock_chain_head() in the same transaction first.';
    END IF;
    UPDATE chain_head SET seq = NEW.seq, hash = NEW.hash WHERE id;
    RETURN NEW;
END
$$;

CREATE TRIGGER ledger_extend_head
    BEFORE INSERT ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_extend_head();

-- The head, locked until the caller's transaction ends.
CREATE FUNCTION lock_chain_head() RETURNS TABLE (head_seq bigint, head_hash text)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = consent, pg_temp AS $$
    SELECT h.seq, h.hash FROM chain_head h WHERE h.id FOR UPDATE
$$;

REVOKE ALL ON FUNCTION ledger_refuse_change() FROM PUBLIC;
REVOKE ALL ON FUNCTION ledger_extend_head() FROM PUBLIC;
REVOKE ALL ON FUNCTION lock_chain_head() FROM PUBLIC;

GRANT USAGE ON SCHEMA consent TO visio_consent;
GRANT SELECT, INSERT ON ledger TO visio_consent;
GRANT SELECT ON chain_head TO visio_consent;
GRANT EXECUTE ON FUNCTION lock_chain_head() TO visio_consent;
GRANT SELECT, INSERT, DELETE ON subjects TO visio_consent;
GRANT SELECT, INSERT ON processed_events TO visio_consent;
