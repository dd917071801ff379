//! What protects an acknowledged STORE from a failover: whether the
//! primary jnhpd writes to has the synchronous standbys its commits wait
//! for (docs/postgres.md, "What a failover can lose").
//!
//! jnhpd answers `W00T!` only for commits PostgreSQL calls durable
//! (durability.rs); how durable that is depends on the server's
//! replication settings, which jnhpd does not choose and a failover tool
//! changes on its own (pg_auto_failover and Patroni drop synchronous
//! replication when the standby is lost, so that the primary keeps taking
//! writes). Operators need to see which case they are in: the engine
//! reads it with every renewal ([`QUERY`]) and [`Replication::state`]
//! names it for metrics, `/status` and the log.

/// The server's timeline, alone (pool.rs checks it for each new
/// connection).
pub const TIMELINE: &str =
    "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8";

/// One statement, readable by any role: the settings that decide what a
/// commit waits for, as jnhpd's own sessions have them, the standbys
/// streaming from this server, and the server's timeline (it changes
/// with every promotion: a failover seen), from the name of the WAL file
/// being written, which has it at once (`pg_control_checkpoint` has it
/// only after the next checkpoint). The standbys are shown only to roles
/// with the privileges of `pg_read_all_stats` (e.g. through
/// `pg_monitor`): other roles see no row at all, so their counts mean
/// nothing and are taken as unknown.
pub const QUERY: &str = "SELECT current_setting('synchronous_standby_names'),
        current_setting('synchronous_commit'),
        pg_has_role('pg_read_all_stats', 'USAGE'),
        (SELECT count(*) FROM pg_stat_replication),
        (SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')),
        ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8";

/// What [`QUERY`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    /// `synchronous_standby_names`.
    pub sync_names: String,
    /// `synchronous_commit` of jnhpd's sessions.
    pub sync_commit: String,
    /// Standbys streaming from this server (WAL senders); `None` when the
    /// role may not see them.
    pub standbys: Option<i64>,
    /// Of them, those a commit counts as synchronous (`sync`, `quorum`);
    /// `None` when the role may not see them.
    pub sync_standbys: Option<i64>,
    /// The server's timeline.
    pub timeline: i64,
}

/// What a commit acknowledged now survives, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicationState {
    /// Commits wait for as many synchronous standbys as the server names,
    /// and that many are streaming: a failover to one of them loses no
    /// acknowledged STORE.
    Sync,
    /// Commits wait for synchronous standbys that are not there: STOREs
    /// wait, then get `ERROR storage unavailable`.
    Waiting,
    /// Standbys stream, but commits do not wait for them: a failover may
    /// lose the last acknowledged STOREs.
    Async,
    /// No standby streams: only this server's disk holds acknowledged
    /// STOREs.
    NoStandby,
    /// jnhpd cannot tell: the query failed, or the role may not see
    /// which standbys are synchronous (grant it `pg_monitor`).
    Unknown,
}

impl ReplicationState {
    /// Every state, in the order metrics list them.
    pub const ALL: [ReplicationState; 5] = [
        ReplicationState::Sync,
        ReplicationState::Waiting,
        ReplicationState::Async,
        ReplicationState::NoStandby,
        ReplicationState::Unknown,
    ];

    /// Its name in metrics (`state` label), `/status` and logs.
    pub fn label(self) -> &'static str {
        match self {
            ReplicationState::Sync => "sync",
            ReplicationState::Waiting => "waiting",
            ReplicationState::Async => "async",
            ReplicationState::NoStandby => "no_standby",
            ReplicationState::Unknown => "unknown",
        }
    }

    /// Its index in [`ReplicationState::ALL`] (kept in an atomic).
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|s| *s == self).unwrap_or(4)
    }
}

impl Replication {
    /// The state these figures describe.
    pub fn state(&self) -> ReplicationState {
        let waits = !self.sync_names.trim().is_empty()
            && !matches!(self.sync_commit.as_str(), "off" | "local");
        let (Some(standbys), Some(sync)) = (self.standbys, self.sync_standbys) else {
            return ReplicationState::Unknown;
        };
        if !waits {
            return match standbys {
                0 => ReplicationState::NoStandby,
                _ => ReplicationState::Async,
            };
        }
        match sync >= required_standbys(&self.sync_names) {
            true => ReplicationState::Sync,
            false => ReplicationState::Waiting,
        }
    }
}

/// How many synchronous standbys a commit waits for under
/// `synchronous_standby_names`: `ANY 2 (a, b, c)`, `FIRST 2 (…)` and
/// `2 (…)` name the number; a plain list (`a, b`) or `*` means one.
pub fn required_standbys(names: &str) -> i64 {
    let text = names.trim_start();
    let rest = ["ANY", "FIRST"]
        .iter()
        .find_map(|keyword| {
            let head = text.get(..keyword.len())?;
            let after = &text[keyword.len()..];
            (head.eq_ignore_ascii_case(keyword) && after.starts_with(char::is_whitespace))
                .then_some(after.trim_start())
        })
        .unwrap_or(text);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let after = rest[digits.len()..].trim_start();
    match digits.parse::<i64>() {
        Ok(n) if after.starts_with('(') => n.max(1),
        _ => 1,
    }
}

/// Runs [`QUERY`] on `client`.
pub async fn query(client: &tokio_postgres::Client) -> Result<Replication, tokio_postgres::Error> {
    let row = client.query_one(QUERY, &[]).await?;
    let visible: bool = row.try_get(2)?;
    let count = |i| row.try_get::<_, i64>(i).map(|n| visible.then_some(n));
    Ok(Replication {
        sync_names: row.try_get(0)?,
        sync_commit: row.try_get(1)?,
        standbys: count(3)?,
        sync_standbys: count(4)?,
        timeline: row.try_get(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replication(names: &str, commit: &str, standbys: i64, sync: Option<i64>) -> Replication {
        Replication {
            sync_names: names.into(),
            sync_commit: commit.into(),
            standbys: sync.map(|_| standbys),
            sync_standbys: sync,
            timeline: 1,
        }
    }

    #[test]
    fn the_number_of_synchronous_standbys_is_read_from_the_setting() {
        for (names, n) in [
            ("", 1),
            ("*", 1),
            ("a, b", 1),
            ("ANY 1 (pgautofailover_standby_2)", 1),
            ("any 2 (a,b,c)", 2),
            ("FIRST 3 (a, b, c)", 3),
            ("2 (a, b)", 2),
            ("2(a,b)", 2),
            ("anyone", 1),
            ("first", 1),
            ("0 (a)", 1),
            ("99999999999999999999 (a)", 1),
        ] {
            assert_eq!(required_standbys(names), n, "{names:?}");
        }
    }

    #[test]
    fn each_state_is_told_apart() {
        use ReplicationState::*;
        let cases = [
            (replication("ANY 1 (a, b)", "on", 1, Some(1)), Sync),
            (
                replication("ANY 1 (a, b)", "remote_apply", 2, Some(2)),
                Sync,
            ),
            (replication("ANY 2 (a, b)", "on", 2, Some(1)), Waiting),
            (replication("a", "on", 0, Some(0)), Waiting),
            (replication("a", "on", 1, Some(0)), Waiting),
            // The role sees no standby (no pg_monitor): nothing is known.
            (replication("a", "on", 1, None), Unknown),
            (replication("", "on", 0, None), Unknown),
            (replication("a", "local", 1, Some(1)), Async),
            (replication("", "on", 1, Some(0)), Async),
            (replication("", "on", 0, Some(0)), NoStandby),
            (replication(" ", "on", 0, Some(0)), NoStandby),
            (replication("a", "off", 0, Some(0)), NoStandby),
        ];
        for (figures, state) in cases {
            assert_eq!(figures.state(), state, "{figures:?}");
        }
    }

    #[test]
    fn labels_and_indexes_agree() {
        for (i, state) in ReplicationState::ALL.iter().enumerate() {
            assert_eq!(state.index(), i);
        }
        let labels: Vec<_> = ReplicationState::ALL.iter().map(|s| s.label()).collect();
        assert_eq!(
            labels,
            ["sync", "waiting", "async", "no_standby", "unknown"]
        );
    }
}
