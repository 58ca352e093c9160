//! The few chDB C functions we call, loaded from `libchdb.so` at run time.
//!
//! We bind them by hand with `libloading` rather than use a chDB crate: the
//! ones on crates.io download the library from elsewhere in their build
//! scripts, and we only need a dozen functions. Signatures follow `chdb.h` of
//! chDB 26.7.

use std::ffi::{c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `chdb_connection` is a pointer to an opaque struct.
pub type Connection = *mut c_void;
/// `chdb_result *`.
pub type ResultPtr = *mut c_void;
/// `chdb_insert_stream`, an opaque handle.
pub type InsertStream = *mut c_void;

#[repr(C)]
#[derive(Default)]
pub struct QueryAnalysis {
    pub struct_size: u32,
    pub statement_count: u32,
    pub flags: u32,
    pub query_class: u32,
}

/// `CHDB_QUERY_READ_ONLY` in `chdb_query_class`.
pub const QUERY_CLASS_READ_ONLY: u32 = 0;
// The other classes (`CHDB_QUERY_MUTATING`, `CHDB_QUERY_CONTROL`) are not
// told apart: whatever does not only read is judged by `clickhouse_http::allow`.

pub struct Api {
    pub connect: unsafe extern "C" fn(c_int, *mut *mut c_char) -> *mut Connection,
    pub close_conn: unsafe extern "C" fn(*mut Connection),
    pub query_n:
        unsafe extern "C" fn(Connection, *const c_char, usize, *const c_char, usize) -> ResultPtr,
    /// `chdb_query_with_params_n`: values bound to `{name:Type}`, never spliced in.
    pub query_with_params_n: unsafe extern "C" fn(
        Connection,
        *const c_char,
        usize,
        *const c_char,
        usize,
        *const *const c_char,
        *const usize,
        *const *const c_char,
        *const usize,
        usize,
    ) -> ResultPtr,
    pub result_buffer: unsafe extern "C" fn(ResultPtr) -> *mut c_char,
    pub result_length: unsafe extern "C" fn(ResultPtr) -> usize,
    pub result_error: unsafe extern "C" fn(ResultPtr) -> *const c_char,
    pub result_elapsed: unsafe extern "C" fn(ResultPtr) -> f64,
    pub result_rows_read: unsafe extern "C" fn(ResultPtr) -> u64,
    pub result_bytes_read: unsafe extern "C" fn(ResultPtr) -> u64,
    pub result_rows_written: unsafe extern "C" fn(ResultPtr) -> u64,
    pub destroy_result: unsafe extern "C" fn(ResultPtr),
    pub classify_query_n: unsafe extern "C" fn(
        Connection,
        *const c_char,
        usize,
        *const c_char,
        usize,
        *mut QueryAnalysis,
    ) -> c_int,
    pub set_signal_handlers_enabled: unsafe extern "C" fn(c_int),
    /// `chdb_stream_insert_n`: an INSERT whose rows follow through `stream_append`.
    pub stream_insert_n: unsafe extern "C" fn(
        Connection,
        *const c_char,
        usize,
        *const c_char,
        usize,
    ) -> InsertStream,
    /// `chdb_stream_append`: `CHDB_SUCCESS` (0) or an error.
    pub stream_append: unsafe extern "C" fn(InsertStream, *const c_void, usize) -> c_int,
    /// `chdb_stream_done`: ends the input, waits for the insert, returns its result.
    pub stream_done: unsafe extern "C" fn(InsertStream) -> ResultPtr,
    pub stream_insert_error: unsafe extern "C" fn(InsertStream) -> *const c_char,
    /// Cancels the insert if it is still running, then frees the handle.
    pub destroy_insert_stream: unsafe extern "C" fn(InsertStream),
}

static API: OnceLock<Result<Api, LoadError>> = OnceLock::new();

/// Why the engine's library could not be loaded. Kept (the first attempt's
/// answer stands for the process), so the loader's error is kept as text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error(
        "the embedded ClickHouse engine is not at {} (it is fetched by the build; \
         rebuild, or set BILTEN_CHDB_LIB / storage.embedded.library)",
        .0.display()
    )]
    Missing(PathBuf),
    #[error("cannot load {}: {reason}", .path.display())]
    Open { path: PathBuf, reason: String },
    #[error("{} lacks {symbol}: {reason}", .path.display())]
    Symbol {
        path: PathBuf,
        symbol: String,
        reason: String,
    },
}

/// Loads the library once per process. It is never unloaded: unloading a
/// C++ engine whose threads may still run is a crash waiting to happen.
pub fn load(path: &Path) -> Result<&'static Api, LoadError> {
    API.get_or_init(|| unsafe { load_uncached(path) })
        .as_ref()
        .map_err(Clone::clone)
}

unsafe fn load_uncached(path: &Path) -> Result<Api, LoadError> {
    if !path.exists() {
        return Err(LoadError::Missing(path.to_path_buf()));
    }
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| LoadError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    macro_rules! sym {
        ($name:literal) => {
            *unsafe { lib.get($name) }.map_err(|e| LoadError::Symbol {
                path: path.to_path_buf(),
                symbol: String::from_utf8_lossy($name).into_owned(),
                reason: e.to_string(),
            })?
        };
    }
    Ok(Api {
        connect: sym!(b"chdb_connect"),
        close_conn: sym!(b"chdb_close_conn"),
        query_n: sym!(b"chdb_query_n"),
        query_with_params_n: sym!(b"chdb_query_with_params_n"),
        result_buffer: sym!(b"chdb_result_buffer"),
        result_length: sym!(b"chdb_result_length"),
        result_error: sym!(b"chdb_result_error"),
        result_elapsed: sym!(b"chdb_result_elapsed"),
        result_rows_read: sym!(b"chdb_result_rows_read"),
        result_bytes_read: sym!(b"chdb_result_bytes_read"),
        result_rows_written: sym!(b"chdb_result_rows_written"),
        destroy_result: sym!(b"chdb_destroy_query_result"),
        classify_query_n: sym!(b"chdb_classify_query_n"),
        set_signal_handlers_enabled: sym!(b"chdb_set_signal_handlers_enabled"),
        stream_insert_n: sym!(b"chdb_stream_insert_n"),
        stream_append: sym!(b"chdb_stream_append"),
        stream_done: sym!(b"chdb_stream_done"),
        stream_insert_error: sym!(b"chdb_stream_insert_error"),
        destroy_insert_stream: sym!(b"chdb_destroy_insert_stream"),
    })
}
