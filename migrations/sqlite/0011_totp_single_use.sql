-- TOTP codes are single-use: the time step of the last code accepted for an operator. A code
-- is accepted only for a later step (RFC 6238 section 5.2), so a code seen over a shoulder
-- or replayed from a log cannot be used again within its 30 s window.
ALTER TABLE operators ADD COLUMN totp_last_step BIGINT;
