//! The SQL text of every statement, built once per table name.
//!
//! The table name is the only text ever put into a statement; it is checked
//! by [`check_table_name`] first, and everything else is a bound parameter.

/// Why a table name is refused, or `None` when it is fine.
pub(super) fn check_table_name(name: &str) -> Option<&'static str> {
    let mut bytes = name.bytes();
    match bytes.next() {
        None => return Some("the table name is empty"),
        Some(b) if !(b.is_ascii_alphabetic() || b == b'_') => {
            return Some("the table name must start with a letter or `_`")
        }
        Some(_) => {}
    }
    if name.len() > 63 {
        return Some("the table name is longer than 63 characters");
    }
    if !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Some("the table name may hold only ASCII letters, digits and `_`");
    }
    if name.len() >= 7 && name[..7].eq_ignore_ascii_case("sqlite_") {
        return Some("names starting with `sqlite_` are reserved by SQLite");
    }
    None
}

/// Every statement the store runs, for one table.
#[derive(Debug)]
pub(super) struct Sql {
    pub(super) table: String,
    pub(super) migrate: Vec<String>,
    pub(super) load: String,
    pub(super) create: String,
    pub(super) link: String,
    pub(super) unlink: String,
    pub(super) save: String,
    pub(super) taken: String,
    pub(super) cycle: String,
    pub(super) delete: String,
    pub(super) end: String,
    pub(super) touch: String,
    pub(super) list: String,
    pub(super) end_linked: String,
    pub(super) end_public: String,
    pub(super) delete_expired: String,
}

/// The columns a load or a list reads, in this order: public id, created,
/// expires, idle timeout, persistence, links (a JSON object).
fn meta_columns(s: &str, links: &str) -> String {
    format!(
        "{s}.public_id, {s}.created_at, {s}.expires_at, {s}.idle_timeout_ms, {s}.persistent, \
         (SELECT json_group_object(name, value) FROM \"{links}\" AS l2 WHERE l2.public_id = {s}.public_id)"
    )
}

/// The `SET` list of a save or a cycle. Parameters: `?2` 1 when the change
/// set clears first, `?3` the JSON merge patch (a key to a string sets it,
/// to `null` removes it), `?4` 1 when the expiry is set exactly (a new idle
/// timeout), `?5` the new expiry, `?6` the idle timeout (ms, or NULL for
/// unchanged), `?7` the persistence (or NULL).
const SET_CHANGES: &str = "items = json_patch(CASE WHEN ?2 THEN '{}' ELSE items END, ?3), \
     expires_at = CASE WHEN ?4 THEN ?5 ELSE MAX(expires_at, ?5) END, \
     idle_timeout_ms = COALESCE(?6, idle_timeout_ms), \
     persistent = COALESCE(?7, persistent)";

impl Sql {
    pub(super) fn new(table: &str) -> Self {
        let t = table;
        let links = format!("{t}_links");
        Self {
            table: t.to_owned(),
            migrate: vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS \"{t}\" (\
                     id TEXT PRIMARY KEY NOT NULL, \
                     public_id TEXT NOT NULL UNIQUE, \
                     created_at INTEGER NOT NULL, \
                     expires_at INTEGER NOT NULL, \
                     items TEXT NOT NULL, \
                     idle_timeout_ms INTEGER NULL, \
                     persistent INTEGER NULL\
                     ) WITHOUT ROWID"
                ),
                format!("CREATE INDEX IF NOT EXISTS \"{t}_expires_at\" ON \"{t}\" (expires_at)"),
                format!(
                    "CREATE TABLE IF NOT EXISTS \"{links}\" (\
                     public_id TEXT NOT NULL, \
                     name TEXT NOT NULL, \
                     value TEXT NOT NULL, \
                     PRIMARY KEY (public_id, name)\
                     ) WITHOUT ROWID"
                ),
                format!(
                    "CREATE INDEX IF NOT EXISTS \"{links}_name_value\" ON \"{links}\" (name, value)"
                ),
                // Every path that deletes a session drops its links (a
                // trigger rather than a foreign key: it does not depend on
                // each connection's `foreign_keys` pragma).
                format!(
                    "CREATE TRIGGER IF NOT EXISTS \"{t}_drop_links\" AFTER DELETE ON \"{t}\" \
                     BEGIN DELETE FROM \"{links}\" WHERE public_id = OLD.public_id; END"
                ),
                // A write that leaves a session without items deletes it, in
                // the same statement.
                format!(
                    "CREATE TRIGGER IF NOT EXISTS \"{t}_drop_emptied\" AFTER UPDATE OF items ON \"{t}\" \
                     WHEN NEW.items = '{{}}' \
                     BEGIN DELETE FROM \"{t}\" WHERE id = NEW.id; END"
                ),
            ],
            load: format!(
                "SELECT {}, s.items FROM \"{t}\" AS s WHERE s.id = ?1 AND s.expires_at > ?2",
                meta_columns("s", &links)
            ),
            create: format!(
                "INSERT INTO \"{t}\" (id, public_id, created_at, expires_at, items, idle_timeout_ms, persistent) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING"
            ),
            link: format!(
                "INSERT INTO \"{links}\" (public_id, name, value) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (public_id, name) DO UPDATE SET value = excluded.value"
            ),
            unlink: format!("DELETE FROM \"{links}\" WHERE public_id = ?1 AND name = ?2"),
            save: format!(
                "UPDATE \"{t}\" SET {SET_CHANGES} WHERE id = ?1 AND expires_at > ?8 \
                 RETURNING public_id, items = '{{}}'"
            ),
            taken: format!("SELECT 1 FROM \"{t}\" WHERE id = ?1"),
            cycle: format!(
                "UPDATE \"{t}\" SET id = ?9, {SET_CHANGES} WHERE id = ?1 AND expires_at > ?8 \
                 RETURNING public_id, items = '{{}}'"
            ),
            delete: format!("DELETE FROM \"{t}\" WHERE id = ?1"),
            end: format!("DELETE FROM \"{t}\" WHERE id = ?1 OR public_id = ?2"),
            touch: format!(
                "UPDATE \"{t}\" SET expires_at = MAX(expires_at, ?2) WHERE id = ?1 AND expires_at > ?3"
            ),
            list: format!(
                "SELECT {} FROM \"{links}\" AS l JOIN \"{t}\" AS s ON s.public_id = l.public_id \
                 WHERE l.name = ?1 AND l.value = ?2 AND s.expires_at > ?3 \
                 ORDER BY s.created_at DESC, s.public_id DESC LIMIT ?4",
                meta_columns("s", &links)
            ),
            end_linked: format!(
                "DELETE FROM \"{t}\" WHERE public_id IN (\
                 SELECT s.public_id FROM \"{links}\" AS l JOIN \"{t}\" AS s ON s.public_id = l.public_id \
                 WHERE l.name = ?1 AND l.value = ?2 AND s.public_id IS NOT ?3 \
                 ORDER BY s.created_at DESC, s.public_id DESC LIMIT -1 OFFSET ?4)"
            ),
            end_public: format!(
                "DELETE FROM \"{t}\" WHERE public_id = ?1 \
                 AND EXISTS (SELECT 1 FROM \"{links}\" WHERE public_id = ?1)"
            ),
            delete_expired: format!(
                "DELETE FROM \"{t}\" WHERE id IN (\
                 SELECT id FROM \"{t}\" WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked_against_injection() {
        for ok in ["sessions", "_s", "S1_x", &"a".repeat(63)] {
            assert_eq!(check_table_name(ok), None, "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "s\"; DROP TABLE x; --",
            "ses.sions",
            "sqlite_master",
            "SQLite_x",
            "é",
            &"a".repeat(64),
        ] {
            assert!(check_table_name(bad).is_some(), "{bad}");
        }
    }
}
