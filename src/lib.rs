//! confab: a realtime chat server speaking Socket.IO v4.
pub mod domain;
pub mod model;
pub mod storage;
