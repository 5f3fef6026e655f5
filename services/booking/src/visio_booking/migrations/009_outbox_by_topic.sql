-- The relay takes each topic's oldest unpublished rows in turn (one partner's flood of replies
-- cannot stand in front of another's): it reads them by topic, then id.
CREATE INDEX outbox_unpublished_by_topic ON outbox (topic, id) WHERE published_at IS NULL;
