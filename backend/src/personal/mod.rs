//! Personal data in an immutable log: sealed with a key per person, erased by destroying the key
//! (crypto-shredding).
//!
//! What is personal here: an account owner's name, the acting user's name in every event's
//! metadata, and the free text a person wrote (an operator's reasons). The event codec writes
//! each such field sealed with the acting user's data key ([`sealed`]); amounts, ids and times
//! stay in clear, so the ledger adds up whoever is forgotten. Each data key is kept in
//! `user_keys`, wrapped by a master key the server reads from a file or a setting and which is
//! never stored in the database ([`master_key`]). Forgetting someone ([`erasure`]) destroys their
//! key and re-states it in the log (`OwnerForgotten`, `UserForgotten`) for what was written
//! before sealing existed; a field sealed with a destroyed key reads as *forgotten*, never as an
//! error.

pub mod erasure;
pub mod keys;
pub mod master_key;
pub mod sealed;

pub use master_key::{MasterKey, MasterKeyError, MasterKeys};
