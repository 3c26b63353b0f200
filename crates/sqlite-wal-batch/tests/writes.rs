//! What a commit costs in writes. Alone in its test binary, as the count is the process's.

use rusqlite::{Connection, OpenFlags, params};

#[test]
fn a_commit_of_many_frames_is_one_write() {
    let vfs = sqlite_wal_batch::register().expect("register the VFS");
    let dir = tempfile::tempdir().expect("temp dir");
    let conn = Connection::open_with_flags_and_vfs(
        dir.path().join("db.sqlite"),
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        vfs,
    )
    .expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         PRAGMA wal_autocheckpoint = 0;
         CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL);
         CREATE INDEX t_v ON t (v);",
    )
    .expect("schema");

    // Frames in the log, from its size: no checkpoint runs, so the log only grows.
    let wal = dir.path().join("db.sqlite-wal");
    let frames = |_: &Connection| -> i64 {
        let len = std::fs::metadata(&wal).expect("the log").len() as i64;
        (len - 32) / (24 + 4096)
    };
    for round in 0..20_i64 {
        let frames_before = frames(&conn);
        let writes_before = sqlite_wal_batch::wal_writes();
        // Rows in the table and its index: a commit of several pages (fewer than 31, the most
        // one write takes).
        let tx = conn.unchecked_transaction().expect("begin");
        for k in round * 10..round * 10 + 6 {
            tx.execute(
                "INSERT INTO t (k, v) VALUES (?1, randomblob(2000))",
                params![k],
            )
            .expect("insert");
        }
        tx.commit().expect("commit");
        let written = frames(&conn) - frames_before;
        let writes = sqlite_wal_batch::wal_writes() - writes_before;
        assert!(written >= 8, "round {round}: a commit of {written} frames");
        assert_eq!(
            writes, 1,
            "round {round}: {written} frames in {writes} writes"
        );
    }
}
