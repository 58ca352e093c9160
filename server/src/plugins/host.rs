//! The wasmtime side: one `Engine` with the pooling allocator and epoch
//! interruption, components compiled once into an `InstancePre`, and a
//! fresh `Store` per batch with a memory cap, a CPU deadline, captured
//! output, and WASI with no capabilities.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use wasmtime::component::{Component, Linker, Resource, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::HostSettings;
use super::compile_cache::CompileCache;

pub mod wit {
    wasmtime::component::bindgen!({ path: "../sdk/wit", world: "plugin" });
}

pub use wit::bilten::plugin::types::{
    Batch, Event, PluginInfo, Rejection, Table as WitTable, Verdict,
};

/// The interface this server implements: `bilten:plugin/validator@<this>`.
pub use bilten_schema::PLUGIN_INTERFACE as INTERFACE_VERSION;
pub(crate) const EXPORT: &str = "bilten:plugin/validator";
/// The WASI version whose clocks we replace (see `deny_waiting`).
const WASI_CLOCKS: &str = "wasi:clocks/monotonic-clock@0.2.12";
/// Memory kept mapped per pool slot between batches (a 1000-event batch
/// uses about 1–2 MiB of a plugin's heap).
const KEEP_RESIDENT: usize = 4 << 20;
/// How often the epoch advances: the granularity of CPU deadlines.
const TICK: Duration = Duration::from_millis(2);

/// What went wrong in one plugin call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {detail}", .kind.name())]
pub struct Fault {
    pub kind: FaultKind,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Ran past its time limit.
    Timeout,
    /// Asked for more memory than its cap.
    Memory,
    /// Trapped: a panic, `unreachable`, a forbidden call.
    Trap,
    /// `init` returned an error.
    Init,
    /// Broke the contract: wrong number of verdicts, an invalid modified event.
    BadOutput,
    /// Not run: the crash-loop breaker has disabled it.
    Disabled,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Timeout,
        FaultKind::Memory,
        FaultKind::Trap,
        FaultKind::Init,
        FaultKind::BadOutput,
        FaultKind::Disabled,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Timeout => "timeout",
            FaultKind::Memory => "memory",
            FaultKind::Trap => "trap",
            FaultKind::Init => "init",
            FaultKind::BadOutput => "bad_output",
            FaultKind::Disabled => "disabled",
        }
    }
}

impl Fault {
    pub fn new(kind: FaultKind, detail: impl Into<String>) -> Fault {
        Fault {
            kind,
            detail: detail.into(),
        }
    }
}

/// The engine, the linker with the sandbox's WASI, and the epoch ticker.
pub struct Host {
    engine: Engine,
    linker: Linker<Sandbox>,
    stop: Arc<AtomicBool>,
    /// Compiled plugins kept between starts, when its directory is private.
    cache: Option<CompileCache>,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The compile cache in `plugin_host.cache_dir`. A cache that cannot be
/// used costs compile time, never the start.
fn compile_cache(settings: &HostSettings) -> Option<CompileCache> {
    if !settings.compile_cache {
        return None;
    }
    let Some(dir) = settings.cache_dir.as_ref() else {
        tracing::info!(
            "plugins compile at every start: no cache directory (set plugin_host.cache_dir, or HOME)"
        );
        return None;
    };
    match CompileCache::open(dir) {
        Ok(cache) => Some(cache),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "plugins compile at every start: their cache is not used: {e}");
            None
        }
    }
}

/// A compiled plugin, ready to instantiate.
pub struct Compiled {
    pre: wit::PluginPre<Sandbox>,
}

/// A call's answer: the plugin's name and version when asked, and its verdicts.
pub type Called = (Option<PluginInfo>, Vec<Verdict>);

/// Limits of one call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub memory_bytes: usize,
    pub output_bytes: usize,
}

/// What one call returned besides its verdicts: the plugin's stdout and
/// stderr (cut at the limit), and how many bytes were cut.
#[derive(Debug, Default)]
pub struct Output {
    pub text: Bytes,
    pub dropped: usize,
}

impl Host {
    pub fn new(settings: &HostSettings) -> wasmtime::Result<Host> {
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        // One store per worker at a time, plus reload validations.
        let slots = (settings.workers as u32 + 4) * 4;
        pool.total_component_instances(slots)
            .total_core_instances(slots * 8)
            .total_memories(slots * 2)
            .total_tables(slots * 8)
            .max_memory_size(settings.max_memory_mb << 20)
            // A batch's memory is zeroed with memset on release, rather than
            // unmapped: the next batch on that slot takes no page faults.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 << 10)
            // Where the kernel can say which pages a batch dirtied (Linux
            // 6.7+), only those are reset: a small batch touches few pages.
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut cfg = wasmtime::Config::new();
        cfg.wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let cache = compile_cache(settings);
        let engine = Engine::new(&cfg)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        deny_waiting(&mut linker)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ticker, stopped) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    ticker.increment_epoch();
                }
            })?;
        Ok(Host {
            engine,
            linker,
            stop,
            cache,
        })
    }

    /// The compile cache's directory, and the plugins it loaded and those
    /// compiled and kept since the start; `None` when it is off.
    pub fn compile_cache(&self) -> Option<(&Path, usize, usize)> {
        let c = self.cache.as_ref()?;
        let (loaded, compiled) = c.counts();
        Some((c.dir(), loaded, compiled))
    }

    /// Compiles a component and checks it implements our interface version.
    pub fn compile(&self, wasm: &[u8]) -> Result<Compiled, Refused> {
        self.link(&self.load(wasm)?)
    }

    /// Compiles a component, not yet checked or linked.
    pub fn load(&self, wasm: &[u8]) -> Result<Component, Refused> {
        let component = match &self.cache {
            Some(cache) => cache.component(&self.engine, wasm),
            None => Component::new(&self.engine, wasm),
        };
        component.map_err(|e| Refused::NotAComponent(format!("{e:#}")))
    }

    /// Checks a compiled component's interface version and links it to the sandbox.
    pub fn link(&self, component: &Component) -> Result<Compiled, Refused> {
        check_interface(&self.engine, component)?;
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| Refused::Imports(format!("{e:#}")))?;
        let pre = wit::PluginPre::new(pre).map_err(|e| Refused::Link(format!("{e:#}")))?;
        Ok(Compiled { pre })
    }

    /// A component's export and import names, sorted.
    pub fn interface(&self, component: &Component) -> (Vec<String>, Vec<String>) {
        let ty = component.component_type();
        let names = |items: &mut dyn Iterator<Item = String>| {
            let mut v: Vec<String> = items.collect();
            v.sort();
            v
        };
        (
            names(&mut ty.exports(&self.engine).map(|(n, _)| n.to_string())),
            names(&mut ty.imports(&self.engine).map(|(n, _)| n.to_string())),
        )
    }

    /// Instantiates in a fresh store, runs `init` and `process`, and checks
    /// the number of verdicts. `now_ms` is what the plugin's clock reads.
    /// With `info`, asks the plugin's name and version too (at load).
    pub fn call(
        &self,
        plugin: &Compiled,
        config_json: &str,
        batch: &Batch,
        limits: Limits,
        now_ms: i64,
        info: bool,
    ) -> (Result<Called, Fault>, Output) {
        let capture = Capture::new(limits.output_bytes);
        let wasi = WasiCtxBuilder::new()
            .stdout(capture.clone())
            .stderr(capture.clone())
            .wall_clock(FrozenWall(Duration::from_millis(now_ms.max(0) as u64)))
            .monotonic_clock(FrozenMonotonic)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let sandbox = Sandbox {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryCap {
                max: limits.memory_bytes,
                exceeded: None,
            },
        };
        let mut store = Store::new(&self.engine, sandbox);
        store.limiter(|s| &mut s.limiter);
        let ticks = limits.timeout.as_micros().div_ceil(TICK.as_micros()) as u64 + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        let result = run(&mut store, plugin, config_json, batch, info);
        let result = result.map_err(|e| classify(e, &store, limits));
        let result = result.and_then(|(info, verdicts)| {
            if verdicts.len() == batch.tables.len() {
                Ok((info, verdicts))
            } else {
                Err(Fault::new(
                    FaultKind::BadOutput,
                    format!(
                        "returned {} verdicts for {} events",
                        verdicts.len(),
                        batch.tables.len()
                    ),
                ))
            }
        });
        drop(store);
        let output = capture.finish();
        // A panic's message is on stderr: the fault should carry it.
        let result = result.map_err(|mut fault| {
            if fault.kind == FaultKind::Trap
                && let Some(last) = String::from_utf8_lossy(&output.text)
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty() && !l.starts_with("note: run with"))
            {
                fault.detail = format!("{}; the plugin wrote: {}", fault.detail, last.trim());
            }
            fault
        });
        (result, output)
    }
}

enum CallError {
    Init(String),
    Wasm(wasmtime::Error),
}

fn run(
    store: &mut Store<Sandbox>,
    plugin: &Compiled,
    config_json: &str,
    batch: &Batch,
    info: bool,
) -> Result<Called, CallError> {
    let bindings = plugin
        .pre
        .instantiate(&mut *store)
        .map_err(CallError::Wasm)?;
    let api = bindings.bilten_plugin_validator();
    let info = match info {
        true => Some(api.call_info(&mut *store).map_err(CallError::Wasm)?),
        false => None,
    };
    api.call_init(&mut *store, config_json)
        .map_err(CallError::Wasm)?
        .map_err(CallError::Init)?;
    let verdicts = api
        .call_process(&mut *store, batch)
        .map_err(CallError::Wasm)?;
    Ok((info, verdicts))
}

fn classify(e: CallError, store: &Store<Sandbox>, limits: Limits) -> Fault {
    let e = match e {
        CallError::Init(msg) => return Fault::new(FaultKind::Init, format!("init failed: {msg}")),
        CallError::Wasm(e) => e,
    };
    if let Some(wanted) = store.data().limiter.exceeded {
        return Fault::new(
            FaultKind::Memory,
            format!(
                "memory cap of {} MiB exceeded (it asked for {} MiB)",
                limits.memory_bytes >> 20,
                wanted >> 20
            ),
        );
    }
    if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
        return Fault::new(
            FaultKind::Timeout,
            format!("ran past its time limit of {:?}", limits.timeout),
        );
    }
    // The trap, or what the host refused, without the wasm backtrace.
    let what = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => e.root_cause().to_string(),
    };
    Fault::new(FaultKind::Trap, what)
}

/// Why the server will not run a component.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    #[error("not a valid WebAssembly component: {0}")]
    NotAComponent(String),
    #[error("it does not export {export} (it exports {0:?}): build it with bilten-plugin-sdk", export = EXPORT)]
    NoExport(Vec<String>),
    #[error(
        "it implements {export}@{0}, and this server supports only @{version}: \
         rebuild it with a bilten-plugin-sdk for interface {version}",
        export = EXPORT,
        version = INTERFACE_VERSION
    )]
    OtherVersion(String),
    #[error(
        "it imports what the sandbox does not provide (only WASI 0.2 without capabilities): {0}"
    )]
    Imports(String),
    #[error("{0}")]
    Link(String),
}

fn check_interface(engine: &Engine, component: &Component) -> Result<(), Refused> {
    let ty = component.component_type();
    let names: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let Some(name) = names.iter().find(|n| n.starts_with(EXPORT)) else {
        return Err(Refused::NoExport(names));
    };
    let version = name.split_once('@').map(|(_, v)| v).unwrap_or("");
    if version != INTERFACE_VERSION {
        return Err(Refused::OtherVersion(version.to_string()));
    }
    Ok(())
}

/// A plugin may not wait: a sleep would hold a worker thread in the host,
/// where the CPU deadline cannot reach it. Waiting on a clock traps.
fn deny_waiting(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clocks = linker.instance(WASI_CLOCKS)?;
    clocks.func_wrap(
        "subscribe-duration",
        |_, (_,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
            Err(wasmtime::format_err!("plugins may not sleep or wait"))
        },
    )?;
    clocks.func_wrap(
        "subscribe-instant",
        |_, (_,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
            Err(wasmtime::format_err!("plugins may not sleep or wait"))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A store's data: WASI with nothing granted, and the memory cap.
pub struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryCap,
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Our own limiter rather than `StoreLimits`: it remembers that the cap was
/// hit, so the fault is reported as memory, not as a bare trap.
struct MemoryCap {
    max: usize,
    exceeded: Option<usize>,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.exceeded = Some(desired);
            return Err(wasmtime::format_err!(
                "memory cap of {} bytes exceeded",
                self.max
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// The wall clock reads the batch's arrival time: the same "now" for every
/// event of a batch, and no timing channel. The monotonic clock stands still.
struct FrozenWall(Duration);

impl wasmtime_wasi::HostWallClock for FrozenWall {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

struct FrozenMonotonic;

impl wasmtime_wasi::HostMonotonicClock for FrozenMonotonic {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Stdout and stderr of one call: kept up to a limit, the rest counted and
/// dropped. Writes never fail, so a chatty plugin is not a faulty one.
#[derive(Clone)]
struct Capture(Arc<std::sync::Mutex<(BytesMut, usize, usize)>>);

impl Capture {
    fn new(limit: usize) -> Capture {
        Capture(Arc::new(std::sync::Mutex::new((BytesMut::new(), 0, limit))))
    }

    fn write(&self, bytes: &[u8]) {
        let mut g = self.0.lock().expect("capture lock");
        let room = g.2.saturating_sub(g.0.len());
        let keep = room.min(bytes.len());
        g.0.extend_from_slice(&bytes[..keep]);
        g.1 += bytes.len() - keep;
    }

    fn finish(&self) -> Output {
        let mut g = self.0.lock().expect("capture lock");
        Output {
            text: std::mem::take(&mut g.0).freeze(),
            dropped: g.1,
        }
    }
}

impl wasmtime_wasi::cli::IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.write(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[async_trait::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        Capture::write(self, &bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}
