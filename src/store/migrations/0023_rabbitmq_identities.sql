-- soilmon schema, version 23: broker identities on RabbitMQ too (cluster mode).
--
-- RabbitMQ's internal users take a password hash in their own format
-- (rabbit_password_hashing_sha256: base64 of a 4-byte salt followed by SHA-256(salt ‖
-- password)), which cannot be derived from the Mosquitto hash: it is computed from the secret
-- when an identity is created or rotated, next to the Mosquitto one. NULL for identities made
-- before this version: `soilmon broker sync` names them ("rotate to enable on RabbitMQ")
-- instead of leaving them out silently.
ALTER TABLE broker_identities ADD COLUMN rabbitmq_password_hash text;
