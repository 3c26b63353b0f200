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
//! Gathered bytes are also written before anything that could look at or change the file
//! (a read, a sync, a truncation, a size query, a lock, a file control, a close) and before a
//! write that does not follow on (SQLite rewriting a frame of the same transaction). An error
//! from that write is returned by the call that made it, and SQLite treats it as it treats a
//! failed frame write. The database file, locks and shared memory are the default VFS's own,
//! untouched: a file that is not a WAL is opened by the default VFS into SQLite's memory and
//! never passes through this code again.

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
    // SAFETY: SQLite's default VFS is a static structure that is never freed.
    let inner = unsafe { *default };
    let Ok(inner_size) = usize::try_from(inner.szOsFile) else {
        return Err(ffi::SQLITE_ERROR);
    };
    let Ok(size) = c_int::try_from(INNER_OFFSET + inner_size) else {
        return Err(ffi::SQLITE_ERROR);
    };
    let _ = DEFAULT_VFS.set(default as usize);
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

/// What SQLite allocates for a WAL file opened through this VFS: the `sqlite3_file` header,
/// the gathered bytes, then (at [`INNER_OFFSET`]) the default VFS's own file structure.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    gathered: Gathered,
}

/// Where the default VFS's file starts: after ours, 16-byte aligned.
const INNER_OFFSET: usize = (size_of::<WalFile>() + 15) & !15;

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
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

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
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // SAFETY: our `szOsFile` is larger than the default's, so its file fits.
        return unsafe { inner_open(default, name, file, flags, out_flags) };
    }
    let wal = file.cast::<WalFile>();
    let inner = inner_of(file);
    // SAFETY: `inner` lies inside SQLite's allocation (see `INNER_OFFSET`).
    let rc = unsafe { inner_open(default, name, inner, flags, out_flags) };
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
    // SAFETY: the memory is SQLite's and ours until `close`; nothing was in it.
    unsafe {
        ptr::write(
            ptr::addr_of_mut!((*wal).gathered),
            Gathered {
                bytes: Vec::new(),
                at: 0,
                commit_header: false,
            },
        );
        (*file).pMethods = &WAL_METHODS;
    }
    ffi::SQLITE_OK
}

fn inner_of(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    file.cast::<u8>().wrapping_add(INNER_OFFSET).cast()
}

/// The gathered bytes and the inner file of a WAL file this VFS opened.
///
/// # Safety
/// `file` is a WAL file opened by [`open`] and not yet closed, used by one thread at a time
/// (SQLite's contract for a connection's files).
unsafe fn parts<'a>(file: *mut ffi::sqlite3_file) -> (&'a mut Gathered, *mut ffi::sqlite3_file) {
    // SAFETY: per this function's contract.
    unsafe { (&mut (*file.cast::<WalFile>()).gathered, inner_of(file)) }
}

/// The default VFS's methods for `inner`.
///
/// # Safety
/// `inner` was opened successfully by the default VFS and is not closed.
unsafe fn methods<'a>(inner: *mut ffi::sqlite3_file) -> &'a ffi::sqlite3_io_methods {
    // SAFETY: per this function's contract, `pMethods` is set and static.
    unsafe { &*(*inner).pMethods }
}

/// Writes what is gathered, in pieces the default VFS takes.
///
/// # Safety
/// As [`parts`].
unsafe fn flush(gathered: &mut Gathered, inner: *mut ffi::sqlite3_file) -> c_int {
    if gathered.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    // SAFETY: as `parts`.
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
    rc
}

/// Writes what is gathered, then runs `then` on the inner file.
///
/// # Safety
/// As [`parts`].
unsafe fn flushed(
    file: *mut ffi::sqlite3_file,
    then: impl FnOnce(&ffi::sqlite3_io_methods, *mut ffi::sqlite3_file) -> Option<c_int>,
) -> c_int {
    // SAFETY: as `parts`.
    let (gathered, inner) = unsafe { parts(file) };
    // SAFETY: as `parts`.
    let rc = unsafe { flush(gathered, inner) };
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    // SAFETY: as `parts`.
    then(unsafe { methods(inner) }, inner).unwrap_or(ffi::SQLITE_IOERR)
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let Ok(len) = usize::try_from(amount) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    // SAFETY: SQLite's `xWrite` contract: `data` holds `amount` bytes; `file` is ours.
    let (bytes, (gathered, inner)) = unsafe {
        (
            std::slice::from_raw_parts(data.cast::<u8>(), len),
            parts(file),
        )
    };
    if !gathered.bytes.is_empty() && offset != gathered.end() {
        // SAFETY: as `parts`.
        let rc = unsafe { flush(gathered, inner) };
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    if gathered.bytes.try_reserve(len).is_err() {
        // No memory to gather: write through, as the default VFS would.
        // SAFETY: as `parts`; the arguments are SQLite's own.
        return unsafe {
            match flush(gathered, inner) {
                ffi::SQLITE_OK => match methods(inner).xWrite {
                    Some(write) => write(inner, data, amount, offset),
                    None => ffi::SQLITE_IOERR_WRITE,
                },
                rc => rc,
            }
        };
    }
    let starts = gathered.bytes.is_empty();
    if starts {
        gathered.at = offset;
    }
    gathered.bytes.extend_from_slice(bytes);
    // A frame header's second word is the database size after a commit, zero otherwise.
    let commit_header = len == FRAME_HEADER && bytes[4..8] != [0; 4];
    let ends_commit = std::mem::replace(&mut gathered.commit_header, commit_header);
    // SQLite writes a commit frame's header, then its page: the page ends the commit. A
    // commit header that starts a gathering may have no page after it: SQLite rewrites the
    // headers of a transaction's frames in place (new checksums, after a frame was written
    // twice), reading each frame first, and the commit's is the last write before the
    // commit is published. It is written at once.
    if ends_commit || (commit_header && starts) || gathered.bytes.len() >= MAX_GATHERED {
        // SAFETY: as `parts`.
        return unsafe { flush(gathered, inner) };
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a file once; after this, the memory is no longer ours.
    unsafe {
        let (gathered, inner) = parts(file);
        let flushed = flush(gathered, inner);
        let closed = methods(inner)
            .xClose
            .map_or(ffi::SQLITE_OK, |close| close(inner));
        ptr::drop_in_place(ptr::addr_of_mut!((*file.cast::<WalFile>()).gathered));
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    out: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite's `xRead` contract; the arguments are passed on unchanged.
    unsafe {
        flushed(file, |m, inner| {
            m.xRead.map(|f| f(inner, out, amount, offset))
        })
    }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: as `read`.
    unsafe { flushed(file, |m, inner| m.xTruncate.map(|f| f(inner, size))) }
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: as `read`.
    unsafe { flushed(file, |m, inner| m.xSync.map(|f| f(inner, flags))) }
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: as `read`.
    unsafe { flushed(file, |m, inner| m.xFileSize.map(|f| f(inner, size))) }
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: as `read`.
    unsafe { flushed(file, |m, inner| m.xLock.map(|f| f(inner, level))) }
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: as `read`.
    unsafe { flushed(file, |m, inner| m.xUnlock.map(|f| f(inner, level))) }
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: as `read`.
    unsafe { flushed(file, |m, inner| m.xCheckReservedLock.map(|f| f(inner, out))) }
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: as `read`.
    unsafe { flushed(file, |m, inner| m.xFileControl.map(|f| f(inner, op, arg))) }
}

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
