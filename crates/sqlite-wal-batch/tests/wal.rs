//! The VFS against real files: every commit is in the WAL file, readable by another
//! connection through the default VFS and recoverable from a copy of the files, whatever the
//! transaction's size, its rewrites of frames, rollbacks and checkpoints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, params};

/// A writer through the VFS and a reader through the default VFS, on one database.
struct Pair {
    dir: tempfile::TempDir,
    writer: Connection,
    reader: Connection,
}

impl Pair {
    fn new(setup: &str) -> Pair {
        Pair::with("", "", setup)
    }

    /// `uri` is appended to the database's URI; `before` runs before the log is turned on
    /// (a page size), `setup` after the table is made.
    fn with(uri: &str, before: &str, setup: &str) -> Pair {
        let vfs = sqlite_wal_batch::register().expect("register the VFS");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db.sqlite");
        let name = format!("file:{}{uri}", path.display());
        let writer = Connection::open_with_flags_and_vfs(&name, flags(), vfs).expect("writer");
        writer
            .execute_batch(&format!(
                "{before}
                 PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
                 CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL);
                 {setup}"
            ))
            .expect("schema");
        let reader = Connection::open_with_flags(&path, flags()).expect("reader");
        Pair {
            dir,
            writer,
            reader,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("db.sqlite")
    }

    /// What the reader sees: rows and a checksum of their contents.
    fn seen_by_reader(&self) -> (usize, u64) {
        summary(&self.reader)
    }

    /// What a fresh process would recover from the files as they are now on disk: the
    /// database and its WAL copied elsewhere and opened, so SQLite rebuilds the wal-index
    /// from the frames and their checksums, stopping at the first frame it cannot trust.
    fn recovered_from_copy(&self) -> (usize, u64) {
        let copy = tempfile::tempdir().expect("temp dir");
        let to = copy.path().join("db.sqlite");
        std::fs::copy(self.path(), &to).expect("copy the database");
        let wal = wal_path(&self.path());
        if wal.exists() {
            std::fs::copy(&wal, wal_path(&to)).expect("copy the WAL");
        }
        let conn = Connection::open_with_flags(&to, flags()).expect("open the copy");
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity check");
        assert_eq!(check, "ok");
        summary(&conn)
    }
}

fn flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_URI
}

fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Rows and a checksum of every key and byte, in key order.
fn summary(conn: &Connection) -> (usize, u64) {
    let mut stmt = conn
        .prepare("SELECT k, v FROM t ORDER BY k")
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .expect("query")
        .collect::<Result<Vec<_>, _>>()
        .expect("rows");
    (
        rows.len(),
        checksum(rows.iter().map(|(k, v)| (*k, v.as_slice()))),
    )
}

/// FNV-1a over keys and values.
fn checksum<'a>(rows: impl Iterator<Item = (i64, &'a [u8])>) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for (k, v) in rows {
        for b in k.to_le_bytes().iter().chain(v) {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    hash
}

/// The model: each key's value is `blob(seed, len)`.
type Model = BTreeMap<i64, (i64, usize)>;

fn model_summary(model: &Model) -> (usize, u64) {
    let blobs: Vec<(i64, Vec<u8>)> = model
        .iter()
        .map(|(&k, &(seed, len))| (k, blob(seed, len)))
        .collect();
    (
        model.len(),
        checksum(blobs.iter().map(|(k, v)| (*k, v.as_slice()))),
    )
}

/// A blob whose bytes depend on its seed and size, so pages differ.
fn blob(seed: i64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((seed as usize).wrapping_mul(31) ^ i.wrapping_mul(7)) as u8)
        .collect()
}

/// xorshift64*, so the history is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Inserts keys `keys` one transaction each, `len(k)` bytes a row, and after each commit
/// runs `check` with the key just committed.
fn insert_one_by_one(
    pair: &Pair,
    model: &mut Model,
    keys: std::ops::Range<i64>,
    len: impl Fn(i64) -> usize,
    check: impl Fn(&Pair, &Model, i64),
) {
    for k in keys {
        let len = len(k);
        pair.writer
            .execute(
                "INSERT INTO t (k, v) VALUES (?1, ?2)",
                params![k, blob(k, len)],
            )
            .expect("insert");
        model.insert(k, (k, len));
        check(pair, model, k);
    }
}

#[test]
fn each_commit_is_in_the_file_when_commit_returns() {
    let pair = Pair::new("");
    let mut model = Model::new();
    // 10 bytes to a few pages, so commits write one frame or several.
    insert_one_by_one(
        &pair,
        &mut model,
        0..300,
        |k| 10 + (k as usize * 997) % 9_000,
        |pair, model, k| {
            assert_eq!(
                pair.seen_by_reader(),
                model_summary(model),
                "after commit {k}"
            );
            if k % 60 == 59 {
                assert_eq!(
                    pair.recovered_from_copy(),
                    model_summary(model),
                    "copy after {k}"
                );
            }
        },
    );
}

#[test]
fn a_transaction_larger_than_the_page_cache_is_written_whole() {
    // Eight pages of cache: the transaction spills frames to the WAL before it commits and
    // rewrites some of them in place when it changes their pages again.
    let mut pair = Pair::new("PRAGMA cache_size = 8;");
    let mut model = Model::new();
    let tx = pair.writer.transaction().expect("begin");
    for k in 0..400_i64 {
        tx.execute(
            "INSERT INTO t (k, v) VALUES (?1, ?2)",
            params![k, blob(k, 1_500)],
        )
        .expect("insert");
        model.insert(k, (k, 1_500));
    }
    for k in (0..400_i64).step_by(3) {
        tx.execute(
            "UPDATE t SET v = ?2 WHERE k = ?1",
            params![k, blob(k + 7, 700)],
        )
        .expect("update");
        model.insert(k, (k + 7, 700));
    }
    tx.commit().expect("commit");
    assert_eq!(pair.seen_by_reader(), model_summary(&model));
    assert_eq!(pair.recovered_from_copy(), model_summary(&model));

    // A large transaction rolled back leaves what was committed, and the next commit after
    // it is whole.
    let tx = pair.writer.transaction().expect("begin");
    for k in 400..800_i64 {
        tx.execute(
            "INSERT INTO t (k, v) VALUES (?1, ?2)",
            params![k, blob(k, 2_000)],
        )
        .expect("insert");
    }
    tx.rollback().expect("rollback");
    assert_eq!(pair.seen_by_reader(), model_summary(&model));
    pair.writer
        .execute("DELETE FROM t WHERE k < 100", [])
        .expect("delete");
    model.retain(|&k, _| k >= 100);
    assert_eq!(pair.seen_by_reader(), model_summary(&model));
    assert_eq!(pair.recovered_from_copy(), model_summary(&model));
}

#[test]
fn a_random_history_with_checkpoints_matches_its_model() {
    // A small automatic checkpoint, so the log is copied back and restarted from its start
    // many times along the way.
    // A size limit, so the log is also cut back after checkpoints.
    let mut pair = Pair::new(
        "PRAGMA wal_autocheckpoint = 16; PRAGMA cache_size = 50;
         PRAGMA journal_size_limit = 65536;",
    );
    let mut model = Model::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for step in 0..600_i64 {
        let tx = pair.writer.transaction().expect("begin");
        let mut changed = model.clone();
        // Mostly a few rows; now and then a transaction of hundreds.
        let most = if rng.below(20) == 0 { 200 } else { 4 };
        for _ in 0..=rng.below(most) {
            let k = rng.below(500) as i64;
            if rng.below(4) == 0 {
                tx.execute("DELETE FROM t WHERE k = ?1", params![k])
                    .expect("delete");
                changed.remove(&k);
            } else {
                let len = 1 + rng.below(6_000) as usize;
                tx.execute(
                    "INSERT INTO t (k, v) VALUES (?1, ?2)
                     ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                    params![k, blob(k ^ step, len)],
                )
                .expect("upsert");
                changed.insert(k, (k ^ step, len));
            }
        }
        if rng.below(8) == 0 {
            tx.rollback().expect("rollback");
        } else {
            tx.commit().expect("commit");
            model = changed;
        }
        match rng.below(40) {
            0 => pair
                .writer
                .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .expect("checkpoint"),
            1 => pair
                .writer
                .execute_batch("PRAGMA wal_checkpoint(PASSIVE)")
                .expect("checkpoint"),
            _ => {}
        }
        assert_eq!(pair.seen_by_reader(), model_summary(&model), "step {step}");
        if step % 100 == 99 {
            assert_eq!(
                pair.recovered_from_copy(),
                model_summary(&model),
                "copy at {step}"
            );
        }
    }
    // Closing the writer checkpoints and removes the log; what is left is the model.
    let path = pair.path();
    drop(pair.reader);
    pair.writer.close().map_err(|(_, e)| e).expect("close");
    let conn = Connection::open_with_flags(&path, flags()).expect("reopen");
    assert_eq!(summary(&conn), model_summary(&model));
}

#[test]
fn frames_a_rolled_back_transaction_spilled_never_land_on_a_later_writers() {
    // The reader writes too, through the default VFS, once the first writer has given up
    // its transaction; then the first writer reads and closes.
    let mut pair = Pair::new("PRAGMA cache_size = 8;");
    let mut model = Model::new();
    for k in 0..20_i64 {
        pair.writer
            .execute(
                "INSERT INTO t (k, v) VALUES (?1, ?2)",
                params![k, blob(k, 3_000)],
            )
            .expect("insert");
        model.insert(k, (k, 3_000));
    }
    // An empty log, so the rollback reloads what it needs from the database file and does
    // not read the log; then a large value, whose overflow pages are spilled to the log
    // once each.
    pair.writer
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .expect("checkpoint");
    let tx = pair.writer.transaction().expect("begin");
    tx.execute(
        "INSERT INTO t (k, v) VALUES (?1, ?2)",
        params![1_000, blob(1, 300_000)],
    )
    .expect("insert");
    tx.rollback().expect("rollback");
    // More than the first writer spilled, so its frames cover all of that part of the log.
    let other = pair.reader.transaction().expect("the other writer's begin");
    for k in 2_000..2_400_i64 {
        other
            .execute(
                "INSERT INTO t (k, v) VALUES (?1, ?2)",
                params![k, blob(-k, 3_000)],
            )
            .expect("the other writer's insert");
        model.insert(k, (-k, 3_000));
    }
    other.commit().expect("the other writer's commit");
    assert_eq!(summary(&pair.writer), model_summary(&model));
    let path = pair.path();
    pair.writer.close().map_err(|(_, e)| e).expect("close");
    let fresh = Connection::open_with_flags(&path, flags()).expect("reopen");
    assert_eq!(summary(&fresh), model_summary(&model));
    drop(fresh);
    let copy = Pair {
        dir: pair.dir,
        writer: pair.reader,
        reader: Connection::open_in_memory().expect("unused"),
    };
    assert_eq!(copy.recovered_from_copy(), model_summary(&model));
}

#[test]
fn commits_padded_to_a_sector_are_whole_for_readers() {
    // Without the power-safe-overwrite promise and with full sync, SQLite repeats a commit's
    // last frame up to the next sector, splitting the frame that crosses it at the sync.
    let pair = Pair::with(
        "?psow=0",
        "PRAGMA page_size = 1024;",
        "PRAGMA synchronous = FULL;",
    );
    let mut model = Model::new();
    insert_one_by_one(
        &pair,
        &mut model,
        0..120,
        |k| 1 + (k as usize * 613) % 3_000,
        |pair, model, k| {
            assert_eq!(
                pair.seen_by_reader(),
                model_summary(model),
                "after commit {k}"
            );
        },
    );
    assert_eq!(pair.recovered_from_copy(), model_summary(&model));
}

#[test]
fn commits_in_exclusive_locking_mode_are_in_the_file() {
    // No shared memory: SQLite keeps the wal-index on the heap and calls no shared-memory
    // lock or barrier, so each commit's own last write must put it in the file. Exclusive
    // before the log is first used, so the wal-index is on the heap.
    let pair = Pair::with(
        "",
        "PRAGMA locking_mode = EXCLUSIVE;",
        "PRAGMA cache_size = 20;",
    );
    let mut model = Model::new();
    insert_one_by_one(
        &pair,
        &mut model,
        0..120,
        |k| 1 + (k as usize * 389) % 7_000,
        |pair, model, k| {
            if k % 30 == 29 {
                assert_eq!(
                    pair.recovered_from_copy(),
                    model_summary(model),
                    "copy after {k}"
                );
            }
        },
    );
}
