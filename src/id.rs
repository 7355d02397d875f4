//! Ids for runs and requests.

/// A random id in UUID v4 form (Judge0 clients expect UUID-shaped tokens).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}
