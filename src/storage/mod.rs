//! Persistence: the database (tasks, applications, tokens, callbacks) and the image store.
//! Neither knows the wire contract: `storage` imports no other module of the crate.

pub mod db;
pub mod images;

pub use db::Db;
pub use images::ImageStore;
