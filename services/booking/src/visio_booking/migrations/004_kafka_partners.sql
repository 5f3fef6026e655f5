-- Booking, issue 18: Kafka partners are identified by their own topic, and own their
-- appointments and idempotency keys as `kafka:<system>`, a namespace no API key may enter.

-- Appointments booked over Kafka so far (no API key booked them) move to their system's Kafka
-- name, so each partner still sees and changes its own appointments once it moves to its topic.
UPDATE appointments
   SET calling_system = 'kafka:' || calling_system
 WHERE api_key_id IS NULL AND calling_system NOT LIKE 'kafka:%';

-- A request id already used on the shared topic keeps its first answer under the Kafka name
-- for the keys' retention: a partner sending it again after the move changes nothing twice.
-- (Until now a system's request ids and its key's Idempotency-Keys shared one namespace, so
-- every key of that name is copied; the HTTP side keeps its own.)
INSERT INTO idempotency_keys
       (caller, key, fingerprint, request_type, status_code, response, created_at)
SELECT 'kafka:' || caller, key, fingerprint, request_type, status_code, response, created_at
  FROM idempotency_keys
 WHERE caller NOT LIKE 'kafka:%'
ON CONFLICT (caller, key) DO NOTHING;

-- No API key can ever be taken for a Kafka partner.
ALTER TABLE api_keys ADD CONSTRAINT api_keys_not_kafka CHECK (name NOT LIKE 'kafka:%');
