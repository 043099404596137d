//! Postgres backend (placeholder until implemented).
