//! The webhook outbox dispatcher: signed deliveries with retries, backoff and dead letters.
