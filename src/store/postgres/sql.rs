//! The SQL text of every operation, built once per table name.

/// A validated table name: `table` or `schema.table`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TableName {
    pub(super) schema: Option<String>,
    pub(super) table: String,
}

/// The longest table name part: room for the longest suffix this store
/// adds (`_links_nv`, 9 bytes) within PostgreSQL's 63-byte identifiers.
pub(super) const MAX_TABLE: usize = 54;

fn valid_ident(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

impl TableName {
    /// Parses `table` or `schema.table`; each part `[A-Za-z_][A-Za-z0-9_]*`,
    /// the schema at most 63 bytes, the table at most [`MAX_TABLE`].
    pub(super) fn parse(name: &str) -> Option<TableName> {
        let (schema, table) = match name.split_once('.') {
            Some((s, t)) => (Some(s), t),
            None => (None, name),
        };
        if schema.is_some_and(|s| !valid_ident(s, 63)) || !valid_ident(table, MAX_TABLE) {
            return None;
        }
        Some(TableName {
            schema: schema.map(str::to_owned),
            table: table.to_owned(),
        })
    }

    /// The quoted, qualified name of the table `<table><suffix>`.
    fn qualified(&self, suffix: &str) -> String {
        match &self.schema {
            Some(s) => format!("\"{s}\".\"{}{suffix}\"", self.table),
            None => format!("\"{}{suffix}\"", self.table),
        }
    }

    /// The quoted, unqualified name `<table><suffix>` (an index: it lives
    /// in its table's schema).
    fn local(&self, suffix: &str) -> String {
        format!("\"{}{suffix}\"", self.table)
    }
}

/// Every statement the store sends.
#[derive(Debug)]
pub(super) struct Queries {
    pub(super) migrate: Vec<String>,
    pub(super) load: String,
    pub(super) create: String,
    pub(super) save: String,
    /// The save of a change set that only sets items and lifetime
    /// settings (it cannot empty the session): one plain `UPDATE`.
    pub(super) save_sets: String,
    pub(super) cycle: String,
    pub(super) delete: String,
    pub(super) end: String,
    pub(super) touch: String,
    pub(super) list: String,
    pub(super) end_linked: String,
    pub(super) end_public: String,
    pub(super) delete_expired: String,
}

/// The common part of save and cycle: `$1` id, `$2` cleared, `$3` removed
/// keys, `$4` set items (a JSON object), `$5` now, `$6` the new expiry,
/// `$7` whether the changes set a new idle timeout (`$8`; the expiry is
/// then set exactly), `$9`/`$10` a new cookie persistence, `$11` the names
/// to unlink, `$12` and `$13` the links to set; `$14` (cycle only) the new
/// id.
fn apply(t: &str, l: &str, new_id: Option<&str>) -> String {
    let set_id = new_id.map_or(String::new(), |p| format!("id = {p}, "));
    format!(
        "WITH cur AS (\
            SELECT id, CASE WHEN $2 THEN $4::jsonb \
                ELSE (items - $3::text[]) || $4::jsonb END AS ni \
            FROM {t} WHERE id = $1 AND expires_at > $5 FOR UPDATE\
         ), del AS (\
            DELETE FROM {t} s USING cur \
            WHERE s.id = cur.id AND cur.ni = '{{}}'::jsonb RETURNING 1\
         ), upd AS (\
            UPDATE {t} s SET {set_id}items = cur.ni, \
                expires_at = CASE WHEN $7 THEN $6::bigint \
                    ELSE GREATEST(s.expires_at, $6::bigint) END, \
                idle_timeout_ms = CASE WHEN $7 THEN $8::bigint ELSE s.idle_timeout_ms END, \
                persistent = CASE WHEN $9 THEN $10::boolean ELSE s.persistent END \
            FROM cur WHERE s.id = cur.id AND cur.ni <> '{{}}'::jsonb \
            RETURNING s.public_id\
         ), unl AS (\
            DELETE FROM {l} k USING upd \
            WHERE k.public_id = upd.public_id AND k.name = ANY($11::text[])\
         ), lnk AS (\
            INSERT INTO {l} (public_id, name, value) \
            SELECT upd.public_id, x.n, x.v FROM upd, unnest($12::text[], $13::text[]) AS x(n, v) \
            ON CONFLICT (public_id, name) DO UPDATE SET value = EXCLUDED.value\
         ) \
         SELECT (SELECT count(*) FROM cur) AS found, (SELECT count(*) FROM del) AS deleted"
    )
}

/// The columns a session's meta is rebuilt from, for the row `s`: its
/// links as one text, `name US value RS name US value` (ASCII unit and
/// record separators: control characters no link name or value holds), or
/// NULL.
fn meta_columns(l: &str) -> String {
    format!(
        "s.idle_timeout_ms, s.persistent, \
         (SELECT string_agg(k.name || chr(31) || k.value, chr(30) ORDER BY k.name) \
            FROM {l} k WHERE k.public_id = s.public_id) AS links"
    )
}

impl Queries {
    pub(super) fn new(name: &TableName) -> Queries {
        let t = name.qualified("");
        let l = name.qualified("_links");
        let meta = meta_columns(&l);
        let mut migrate = Vec::new();
        if let Some(schema) = &name.schema {
            migrate.push(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""));
        }
        migrate.push(format!(
            "CREATE TABLE IF NOT EXISTS {t} (\
                id TEXT PRIMARY KEY, \
                public_id TEXT NOT NULL UNIQUE, \
                created_at BIGINT NOT NULL, \
                expires_at BIGINT NOT NULL, \
                items JSONB NOT NULL, \
                idle_timeout_ms BIGINT NULL, \
                persistent BOOLEAN NULL)"
        ));
        migrate.push(format!(
            "CREATE INDEX IF NOT EXISTS {} ON {t} (expires_at)",
            name.local("_expires")
        ));
        migrate.push(format!(
            "CREATE TABLE IF NOT EXISTS {l} (\
                public_id TEXT NOT NULL REFERENCES {t} (public_id) ON DELETE CASCADE, \
                name TEXT NOT NULL, \
                value TEXT NOT NULL, \
                PRIMARY KEY (public_id, name))"
        ));
        migrate.push(format!(
            "CREATE INDEX IF NOT EXISTS {} ON {l} (name, value)",
            name.local("_links_nv")
        ));
        Queries {
            migrate,
            load: format!(
                "SELECT s.public_id, s.created_at, s.expires_at, s.items::text AS items, {meta} \
                 FROM {t} s WHERE s.id = $1 AND s.expires_at > $2"
            ),
            create: format!(
                "WITH ins AS (\
                    INSERT INTO {t} (id, public_id, created_at, expires_at, items, idle_timeout_ms, persistent) \
                    VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7) \
                    ON CONFLICT (id) DO NOTHING RETURNING public_id\
                 ), lnk AS (\
                    INSERT INTO {l} (public_id, name, value) \
                    SELECT ins.public_id, x.n, x.v FROM ins, unnest($8::text[], $9::text[]) AS x(n, v)\
                 ) SELECT count(*) FROM ins"
            ),
            save: apply(&t, &l, None),
            save_sets: format!(
                "UPDATE {t} SET items = items || $2::jsonb, \
                    expires_at = CASE WHEN $5 THEN $4::bigint \
                        ELSE GREATEST(expires_at, $4::bigint) END, \
                    idle_timeout_ms = CASE WHEN $5 THEN $6::bigint ELSE idle_timeout_ms END, \
                    persistent = CASE WHEN $7 THEN $8::boolean ELSE persistent END \
                 WHERE id = $1 AND expires_at > $3"
            ),
            cycle: apply(&t, &l, Some("$14")),
            delete: format!("DELETE FROM {t} WHERE id = $1"),
            end: format!("DELETE FROM {t} WHERE id = $1 OR public_id = $2"),
            touch: format!(
                "WITH u AS (\
                    UPDATE {t} SET expires_at = $2 \
                    WHERE id = $1 AND expires_at > $3 AND expires_at < $2 RETURNING 1\
                 ) SELECT EXISTS (SELECT 1 FROM {t} WHERE id = $1 AND expires_at > $3)"
            ),
            list: format!(
                "SELECT s.public_id, s.created_at, s.expires_at, {meta} \
                 FROM {l} f JOIN {t} s ON s.public_id = f.public_id \
                 WHERE f.name = $1 AND f.value = $2 AND s.expires_at > $3 \
                 ORDER BY s.created_at DESC, s.public_id DESC LIMIT $4"
            ),
            end_linked: format!(
                "WITH c AS (\
                    SELECT s.public_id FROM {l} f JOIN {t} s ON s.public_id = f.public_id \
                    WHERE f.name = $1 AND f.value = $2 AND s.public_id IS DISTINCT FROM $3::text \
                    ORDER BY s.created_at DESC, s.public_id DESC OFFSET $4\
                 ), d AS (\
                    DELETE FROM {t} s USING c WHERE s.public_id = c.public_id RETURNING 1\
                 ) SELECT count(*) FROM d"
            ),
            end_public: format!(
                "DELETE FROM {t} s WHERE s.public_id = $1 \
                 AND EXISTS (SELECT 1 FROM {l} k WHERE k.public_id = s.public_id)"
            ),
            delete_expired: format!(
                "WITH d AS (\
                    DELETE FROM {t} WHERE id IN (\
                        SELECT id FROM {t} WHERE expires_at <= $1 \
                        ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
                    RETURNING 1\
                 ) SELECT count(*) FROM d"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_validated() {
        for ok in [
            "sessions",
            "_s",
            "app.sessions",
            "S1_x",
            &"a".repeat(MAX_TABLE),
        ] {
            assert!(TableName::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "1s",
            "s;drop table x",
            "s\"",
            "a.b.c",
            ".s",
            "s.",
            "sé",
            "s s",
            "s-x",
            &"a".repeat(MAX_TABLE + 1),
        ] {
            assert!(TableName::parse(bad).is_none(), "{bad}");
        }
        let n = TableName::parse("app.sessions").unwrap_or_else(|| unreachable!());
        assert_eq!(n.qualified("_links"), "\"app\".\"sessions_links\"");
        assert_eq!(n.local("_expires"), "\"sessions_expires\"");
    }
}
