//! A SQLite VFS that writes each commit's WAL frames with one system call.
//!
//! SQLite appends a frame to the write-ahead log with two writes, the frame's 24-byte header
//! and then its page, so a commit of n pages costs 2n `pwrite` calls, each taking the file's
//! page-cache folios and the filesystem's write path on its own. This VFS wraps the
//! platform's default VFS and, for WAL files only, gathers consecutive appends in memory and
//! writes them with one call as soon as the commit frame is complete. The commit is therefore
//! in the file before SQLite publishes it to other connections (the wal-index header is
//! written after the frames), and before `COMMIT` returns, just as without this VFS; the
//! durability `PRAGMA synchronous` asks for is unchanged, as every sync still reaches the file.
//!
//! Only a run of frames is gathered: a gathering starts with a frame header that does not
//! end a commit (or with the log's own header at its start), and every other write with
//! nothing gathered goes straight through (one-frame commits, frames rewritten in place,
//! commit headers rewritten, the tail of a frame split at a sync point). Gathered bytes are also
//! written before anything that could look at or change the WAL (a read, a sync, a
//! truncation, a size query, a lock, a file control, a close), before a write that does not
//! follow on, and before the database file's shared-memory locks and barriers, which is
//! where SQLite publishes a commit and where a writer gives up its write lock, so frames a
//! rolled-back transaction spilled are never left in memory for a later writer to meet. An
//! error from a write is returned by the call that made it, and SQLite treats it as a failed
//! frame write.
//!
//! Locks, shared memory and every other file are the default VFS's own: the database file's
//! methods pass each call on, and a file that is neither is opened by the default VFS into
//! SQLite's memory and never passes through this code again.

use std::ffi::{CStr, c_int, c_void};
use std::mem::size_of;
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use libsqlite3_sys as ffi;

/// The name the VFS is registered under.
pub const NAME: &CStr = c"wal-batch";

/// A WAL frame's header: page number, commit size, two salts, two checksums.
const FRAME_HEADER: usize = 24;

/// Gathered bytes are written once they reach this size, so a transaction far larger than
/// memory wants (one that spills) still streams to the file.
const MAX_GATHERED: usize = 1 << 20;

/// The most one write passes to the default VFS: the unix VFS takes at most 0x1ffff bytes
/// a call (it masks the length with it), as SQLite itself never writes more than a page.
/// 31 pages of 4 KiB, so a sale's commit of about 23 frames is one write.
const MAX_WRITE: usize = 0x1f000;

/// Registers the VFS (once per process) and returns its name, for
/// `sqlite3_open_v2`'s `zVfs` (rusqlite: `Connection::open_with_flags_and_vfs`).
///
/// # Errors
/// SQLite's result code when it cannot be initialised, has no default VFS, or refuses the
/// registration.
pub fn register() -> Result<&'static CStr, c_int> {
    static REGISTERED: OnceLock<Result<(), c_int>> = OnceLock::new();
    // SAFETY: `register_once` runs once, guarded by the `OnceLock`.
    (*REGISTERED.get_or_init(|| unsafe { register_once() })).map(|()| NAME)
}

/// Writes of gathered bytes this process has made to WAL files, counted so a test or a
/// benchmark can see what a commit costs.
static WAL_WRITES: AtomicU64 = AtomicU64::new(0);

/// How many writes the VFS has made to WAL files in this process (each one `pwrite` on unix).
pub fn wal_writes() -> u64 {
    WAL_WRITES.load(Ordering::Relaxed)
}

/// The default VFS, kept as an address so the `OnceLock` is `Sync`; set before our VFS is
/// registered, so every callback finds it.
static DEFAULT_VFS: OnceLock<usize> = OnceLock::new();

fn default_vfs() -> *mut ffi::sqlite3_vfs {
    DEFAULT_VFS.get().copied().unwrap_or(0) as *mut ffi::sqlite3_vfs
}

/// The size of the default VFS's file structure.
static INNER_SIZE: OnceLock<usize> = OnceLock::new();

/// # Safety
/// Called once; the VFS it registers lives for the rest of the process.
unsafe fn register_once() -> Result<(), c_int> {
    // SAFETY: plain SQLite library calls, valid at any time.
    let default = unsafe {
        let rc = ffi::sqlite3_initialize();
        if rc != ffi::SQLITE_OK {
            return Err(rc);
        }
        ffi::sqlite3_vfs_find(ptr::null())
    };
    if default.is_null() {
        return Err(ffi::SQLITE_ERROR);
    }
    // SAFETY: a registered VFS is never freed while registered (the unix ones are static).
    let inner = unsafe { *default };
    let Ok(inner_size) = usize::try_from(inner.szOsFile) else {
        return Err(ffi::SQLITE_ERROR);
    };
    let Ok(size) = c_int::try_from(INNER_OFFSET + inner_size) else {
        return Err(ffi::SQLITE_ERROR);
    };
    let _ = DEFAULT_VFS.set(default as usize);
    let _ = INNER_SIZE.set(inner_size);
    // Every method but `xOpen` is the default VFS's own, called with our structure, whose
    // `pAppData` and `mxPathname` are the default's (the unix VFS keeps its locking style in
    // `pAppData`). `xOpen` passes the default VFS itself.
    let vfs = Box::new(ffi::sqlite3_vfs {
        szOsFile: size,
        pNext: ptr::null_mut(),
        zName: NAME.as_ptr(),
        xOpen: Some(open),
        ..inner
    });
    // SAFETY: the structure is leaked, so it outlives every connection that uses it.
    let rc = unsafe { ffi::sqlite3_vfs_register(Box::into_raw(vfs), 0) };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rc)
    }
}

/// A WAL file opened through this VFS, in the memory SQLite allocates for it: the
/// `sqlite3_file` header, the gathered bytes, its database file, then (at [`INNER_OFFSET`])
/// the default VFS's own file structure.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    gathered: Gathered,
    /// The database file whose log this is, while both are open.
    db: *mut DbFile,
}

/// A main database file opened through this VFS: its WAL, while open, then the default VFS's
/// file.
#[repr(C)]
struct DbFile {
    base: ffi::sqlite3_file,
    wal: *mut WalFile,
}

/// Where the default VFS's file starts: after ours, 16-byte aligned.
const INNER_OFFSET: usize = {
    let ours = if size_of::<WalFile>() > size_of::<DbFile>() {
        size_of::<WalFile>()
    } else {
        size_of::<DbFile>()
    };
    (ours + 15) & !15
};

/// The WAL header, written at the log's start when it is created or restarted.
const WAL_HEADER: usize = 32;

/// Consecutive writes not yet made.
struct Gathered {
    bytes: Vec<u8>,
    /// The file offset of `bytes[0]`.
    at: i64,
    /// The last write was a commit frame's header: the next one, its page, ends the commit.
    commit_header: bool,
}

impl Gathered {
    fn end(&self) -> i64 {
        self.at + self.bytes.len() as i64
    }
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    // Version 1: SQLite maps shared memory and pages only through the database file.
    iVersion: 1,
    xClose: Some(wal_close),
    xRead: Some(wal_read),
    xWrite: Some(wal_write),
    xTruncate: Some(wal_truncate),
    xSync: Some(wal_sync),
    xFileSize: Some(wal_file_size),
    xLock: Some(wal_lock),
    xUnlock: Some(wal_unlock),
    xCheckReservedLock: Some(wal_check_reserved_lock),
    xFileControl: Some(wal_file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

/// The database file's methods, at the version of the default VFS's (SQLite asks a file of
/// version 1 for no shared memory, and of version 2 for no memory-mapped pages).
const fn db_methods(version: c_int) -> ffi::sqlite3_io_methods {
    ffi::sqlite3_io_methods {
        iVersion: version,
        xClose: Some(db_close),
        xRead: Some(db_read),
        xWrite: Some(db_write),
        xTruncate: Some(db_truncate),
        xSync: Some(db_sync),
        xFileSize: Some(db_file_size),
        xLock: Some(db_lock),
        xUnlock: Some(db_unlock),
        xCheckReservedLock: Some(db_check_reserved_lock),
        xFileControl: Some(db_file_control),
        xSectorSize: Some(sector_size),
        xDeviceCharacteristics: Some(device_characteristics),
        xShmMap: Some(db_shm_map),
        xShmLock: Some(db_shm_lock),
        xShmBarrier: Some(db_shm_barrier),
        xShmUnmap: Some(db_shm_unmap),
        xFetch: Some(db_fetch),
        xUnfetch: Some(db_unfetch),
    }
}

static DB_METHODS: [ffi::sqlite3_io_methods; 3] = [db_methods(1), db_methods(2), db_methods(3)];

/// # Safety
/// SQLite's `xOpen` contract: `file` points to `szOsFile` bytes that SQLite owns.
unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let default = default_vfs();
    // SAFETY: `default` was set before this VFS was registered and is never freed.
    let Some(inner_open) = (unsafe { (*default).xOpen }) else {
        return ffi::SQLITE_CANTOPEN;
    };
    let wal = flags & ffi::SQLITE_OPEN_WAL != 0;
    if !wal && flags & ffi::SQLITE_OPEN_MAIN_DB == 0 {
        // SAFETY: our `szOsFile` is larger than the default's, so its file fits.
        return unsafe { inner_open(default, name, file, flags, out_flags) };
    }
    let inner = inner_of(file);
    // SAFETY: `inner` lies inside SQLite's allocation (see `INNER_OFFSET`), with
    // `INNER_SIZE` bytes for the default VFS's file, zeroed so a failed open leaves no
    // stale methods pointer.
    let rc = unsafe {
        ptr::write_bytes(
            inner.cast::<u8>(),
            0,
            INNER_SIZE.get().copied().unwrap_or(0),
        );
        inner_open(default, name, inner, flags, out_flags)
    };
    if rc != ffi::SQLITE_OK {
        // SAFETY: an inner file the default VFS left with methods must still be closed.
        unsafe {
            if let Some(close) = (*inner).pMethods.as_ref().and_then(|m| m.xClose) {
                close(inner);
            }
            (*file).pMethods = ptr::null();
        }
        return rc;
    }
    if !wal {
        let db = file.cast::<DbFile>();
        // SAFETY: the memory is SQLite's and ours until `db_close`.
        unsafe {
            ptr::addr_of_mut!((*db).wal).write(ptr::null_mut());
            let version = methods(inner).iVersion.clamp(1, 3);
            (*file).pMethods = &DB_METHODS[(version - 1) as usize];
        }
        return ffi::SQLITE_OK;
    }
    let wal = file.cast::<WalFile>();
    // SAFETY: `name` was passed to `xOpen` with `SQLITE_OPEN_WAL`, the case
    // `sqlite3_database_file_object` is for; it returns the connection's database file.
    let db = unsafe { ffi::sqlite3_database_file_object(name) };
    // SAFETY: a database file with our methods is a `DbFile`; the memory of `wal` is
    // SQLite's and ours until `wal_close`.
    unsafe {
        let ours = !db.is_null() && DB_METHODS.iter().any(|m| ptr::eq((*db).pMethods, m));
        let db = if ours {
            let db = db.cast::<DbFile>();
            (*db).wal = wal;
            db
        } else {
            ptr::null_mut()
        };
        ptr::addr_of_mut!((*wal).db).write(db);
        ptr::addr_of_mut!((*wal).gathered).write(Gathered {
            bytes: Vec::new(),
            at: 0,
            commit_header: false,
        });
        (*file).pMethods = &WAL_METHODS;
    }
    ffi::SQLITE_OK
}

fn inner_of(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    file.cast::<u8>().wrapping_add(INNER_OFFSET).cast()
}

/// The default VFS's methods for `inner`.
///
/// # Safety
/// `inner` was opened successfully by the default VFS and is not closed.
unsafe fn methods<'a>(inner: *mut ffi::sqlite3_file) -> &'a ffi::sqlite3_io_methods {
    // SAFETY: per this function's contract, `pMethods` is set and static.
    unsafe { &*(*inner).pMethods }
}

/// Writes what a WAL file has gathered, in pieces the default VFS takes.
///
/// # Safety
/// `wal` is a WAL file opened by [`open`] and not yet closed, used by one thread at a time
/// (SQLite's contract for a connection's files).
unsafe fn flush(wal: *mut WalFile) -> c_int {
    // SAFETY: per this function's contract.
    let (gathered, inner) = unsafe { (&mut (*wal).gathered, inner_of(wal.cast())) };
    if gathered.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    // SAFETY: as above.
    let Some(write) = (unsafe { methods(inner) }).xWrite else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    let mut rc = ffi::SQLITE_OK;
    let mut at = gathered.at;
    for piece in gathered.bytes.chunks(MAX_WRITE) {
        // `MAX_WRITE` fits an `int`.
        let len = piece.len() as c_int;
        // SAFETY: the piece is valid for its length; `inner` is open.
        rc = unsafe { write(inner, piece.as_ptr().cast(), len, at) };
        WAL_WRITES.fetch_add(1, Ordering::Relaxed);
        if rc != ffi::SQLITE_OK {
            break;
        }
        at += len as i64;
    }
    gathered.bytes.clear();
    gathered.commit_header = false;
    rc
}

/// Writes straight through to the default VFS.
///
/// # Safety
/// As [`flush`]; `data` holds `amount` bytes.
unsafe fn write_through(
    wal: *mut WalFile,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let inner = inner_of(wal.cast());
    // SAFETY: per this function's contract.
    match unsafe { methods(inner) }.xWrite {
        // SAFETY: SQLite's arguments, passed on.
        Some(write) => unsafe { write(inner, data, amount, offset) },
        None => ffi::SQLITE_IOERR_WRITE,
    }
}

unsafe extern "C" fn wal_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let wal = file.cast::<WalFile>();
    // SAFETY: `file` is an open WAL file of ours.
    if unsafe { (*wal).db.is_null() } {
        // Without its database file, the log would not be written before a lock or a
        // barrier: nothing is gathered.
        // SAFETY: SQLite's arguments, passed on.
        return unsafe { write_through(wal, data, amount, offset) };
    }
    let Ok(len) = usize::try_from(amount) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    // SAFETY: SQLite's `xWrite` contract: `data` holds `amount` bytes; `file` is ours.
    let (bytes, gathered) = unsafe {
        (
            std::slice::from_raw_parts(data.cast::<u8>(), len),
            &mut (*wal).gathered,
        )
    };
    // A frame header's second word is the database size after a commit, zero otherwise.
    let header = len == FRAME_HEADER;
    let commit_header = header && bytes[4..8] != [0; 4];
    if !gathered.bytes.is_empty() && offset != gathered.end() {
        // SAFETY: `wal` is open.
        let rc = unsafe { flush(wal) };
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    let ends_commit = std::mem::replace(&mut gathered.commit_header, false);
    if gathered.bytes.is_empty() {
        let starts_run = (header && !commit_header) || (offset == 0 && len == WAL_HEADER);
        if !starts_run {
            // SAFETY: as above.
            return unsafe { write_through(wal, data, amount, offset) };
        }
        gathered.at = offset;
    }
    if gathered.bytes.try_reserve(len).is_err() {
        // No memory to gather: write what is gathered, then this, as the default VFS would.
        // SAFETY: as above.
        return unsafe {
            match flush(wal) {
                ffi::SQLITE_OK => write_through(wal, data, amount, offset),
                rc => rc,
            }
        };
    }
    gathered.bytes.extend_from_slice(bytes);
    gathered.commit_header = commit_header;
    if ends_commit || gathered.bytes.len() >= MAX_GATHERED {
        // SAFETY: as above.
        return unsafe { flush(wal) };
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn wal_close(file: *mut ffi::sqlite3_file) -> c_int {
    let wal = file.cast::<WalFile>();
    let inner = inner_of(file);
    // SAFETY: SQLite closes a file once; after this, the memory is no longer ours. The
    // database file, if linked, is open (SQLite closes the log first).
    unsafe {
        let flushed = flush(wal);
        let db = (*wal).db;
        if !db.is_null() {
            (*db).wal = ptr::null_mut();
        }
        let closed = methods(inner)
            .xClose
            .map_or(ffi::SQLITE_OK, |close| close(inner));
        ptr::drop_in_place(ptr::addr_of_mut!((*wal).gathered));
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

/// A WAL method that writes what is gathered first, then passes the call on.
macro_rules! wal_flushed {
    ($name:ident, $method:ident ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            let inner = inner_of(file);
            // SAFETY: SQLite's contract for the method: `file` is an open WAL file of ours,
            // and the other arguments are passed on unchanged.
            unsafe {
                match flush(file.cast()) {
                    ffi::SQLITE_OK => match methods(inner).$method {
                        Some(f) => f(inner $(, $arg)*),
                        None => ffi::SQLITE_IOERR,
                    },
                    rc => rc,
                }
            }
        }
    };
}

wal_flushed!(wal_read, xRead(out: *mut c_void, amount: c_int, offset: i64));
wal_flushed!(wal_truncate, xTruncate(size: i64));
wal_flushed!(wal_sync, xSync(flags: c_int));
wal_flushed!(wal_file_size, xFileSize(size: *mut i64));
wal_flushed!(wal_lock, xLock(level: c_int));
wal_flushed!(wal_unlock, xUnlock(level: c_int));
wal_flushed!(wal_check_reserved_lock, xCheckReservedLock(out: *mut c_int));
wal_flushed!(wal_file_control, xFileControl(op: c_int, arg: *mut c_void));
// (A missing `xFileControl` answers `SQLITE_IOERR` above; the unix VFS always has one.)

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    let inner = inner_of(file);
    // SAFETY: `file` is open; the question changes nothing, so nothing is written first.
    unsafe { methods(inner).xSectorSize.map_or(4096, |f| f(inner)) }
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    let inner = inner_of(file);
    // SAFETY: as `sector_size`.
    unsafe {
        methods(inner)
            .xDeviceCharacteristics
            .map_or(0, |f| f(inner))
    }
}

/// Writes what the database's WAL has gathered, if it is open.
///
/// # Safety
/// `file` is a database file opened by [`open`] and not yet closed.
unsafe fn flush_log_of(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: per this function's contract; a linked WAL is open (it unlinks on close).
    unsafe {
        let wal = (*file.cast::<DbFile>()).wal;
        if wal.is_null() {
            ffi::SQLITE_OK
        } else {
            flush(wal)
        }
    }
}

/// A database method passed on as it is, or after the log's gathered bytes are written.
macro_rules! db_forward {
    ($name:ident, $method:ident ($($arg:ident: $ty:ty),*) -> $ret:ty, $missing:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> $ret {
            let inner = inner_of(file);
            // SAFETY: SQLite's contract for the method: `file` is an open database file of
            // ours, and the other arguments are passed on unchanged.
            unsafe {
                match methods(inner).$method {
                    Some(f) => f(inner $(, $arg)*),
                    None => $missing,
                }
            }
        }
    };
}

db_forward!(db_read, xRead(out: *mut c_void, amount: c_int, offset: i64) -> c_int, ffi::SQLITE_IOERR);
db_forward!(db_write, xWrite(data: *const c_void, amount: c_int, offset: i64) -> c_int, ffi::SQLITE_IOERR);
db_forward!(db_truncate, xTruncate(size: i64) -> c_int, ffi::SQLITE_IOERR);
db_forward!(db_sync, xSync(flags: c_int) -> c_int, ffi::SQLITE_IOERR);
db_forward!(db_file_size, xFileSize(size: *mut i64) -> c_int, ffi::SQLITE_IOERR);
db_forward!(db_lock, xLock(level: c_int) -> c_int, ffi::SQLITE_IOERR);
db_forward!(db_unlock, xUnlock(level: c_int) -> c_int, ffi::SQLITE_IOERR);
db_forward!(db_check_reserved_lock, xCheckReservedLock(out: *mut c_int) -> c_int, ffi::SQLITE_IOERR);
db_forward!(db_file_control, xFileControl(op: c_int, arg: *mut c_void) -> c_int, ffi::SQLITE_NOTFOUND);
db_forward!(db_shm_map, xShmMap(page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) -> c_int, ffi::SQLITE_IOERR);
// Without the default's `xFetch`, "no mapping" (SQLite then reads instead).
db_forward!(db_fetch, xFetch(offset: i64, amount: c_int, out: *mut *mut c_void) -> c_int, {
    *out = ptr::null_mut();
    ffi::SQLITE_OK
});
db_forward!(db_unfetch, xUnfetch(offset: i64, page: *mut c_void) -> c_int, ffi::SQLITE_OK);
// A writer takes and gives up its write lock, and readers their snapshots, through the
// shared-memory locks; a commit is published behind a barrier. The log is in the file first.
// An unlock or an unmap happens even when that write fails (SQLite ignores their result: a
// lock left held would stop every writer), and the write's error is returned after it.
unsafe extern "C" fn db_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    let inner = inner_of(file);
    // SAFETY: as `db_forward!`.
    unsafe {
        let flushed = flush_log_of(file);
        if flushed != ffi::SQLITE_OK && flags & ffi::SQLITE_SHM_UNLOCK == 0 {
            return flushed;
        }
        let rc = methods(inner)
            .xShmLock
            .map_or(ffi::SQLITE_IOERR, |f| f(inner, offset, n, flags));
        if rc == ffi::SQLITE_OK { flushed } else { rc }
    }
}

unsafe extern "C" fn db_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    let inner = inner_of(file);
    // SAFETY: as `db_forward!`.
    unsafe {
        let flushed = flush_log_of(file);
        let rc = methods(inner)
            .xShmUnmap
            .map_or(ffi::SQLITE_IOERR, |f| f(inner, delete));
        if rc == ffi::SQLITE_OK { flushed } else { rc }
    }
}

unsafe extern "C" fn db_shm_barrier(file: *mut ffi::sqlite3_file) {
    let inner = inner_of(file);
    // SAFETY: as `db_forward!`. A barrier cannot report an error. Nothing is normally
    // gathered here: a commit's run is written by its last page's write, which reports any
    // error. What could be left (a padding frame's split tail that looks like a frame
    // header) is written now; an error writing it is lost, but the commit it pads is
    // already in the file.
    unsafe {
        let _ = flush_log_of(file);
        if let Some(barrier) = methods(inner).xShmBarrier {
            barrier(inner);
        }
    }
}

unsafe extern "C" fn db_close(file: *mut ffi::sqlite3_file) -> c_int {
    let inner = inner_of(file);
    // SAFETY: SQLite closes a file once. A WAL still linked (SQLite closes it first, so it
    // should not be) is unlinked so it never reaches freed memory.
    unsafe {
        let wal = (*file.cast::<DbFile>()).wal;
        if !wal.is_null() {
            (*wal).db = ptr::null_mut();
        }
        methods(inner)
            .xClose
            .map_or(ffi::SQLITE_OK, |close| close(inner))
    }
}
