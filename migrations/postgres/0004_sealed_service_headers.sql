-- Service header values are sealed like service tokens (AES-256-GCM, bound to the service and
-- the header's name, key id inside): a JSON list of {name, sealed (base64), last4}. The values
-- that `headers` held in plain text are sealed into it at the first start after this migration
-- (the keys to seal them are not known to SQL), which leaves `headers` empty for good.
ALTER TABLE mcp_services ADD COLUMN sealed_headers JSONB NOT NULL DEFAULT '[]';
