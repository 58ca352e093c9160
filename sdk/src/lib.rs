//! The Bilten Analytics plugin SDK: write a validator or enricher as one
//! function per event, and [`export_plugin!`] turns it into a WebAssembly
//! component the server loads (`cargo build --target wasm32-wasip2`).
//!
//! ```ignore
//! use bilten_plugin_sdk::{export_plugin, Config, Error, EventRef, Plugin, Verdict};
//!
//! struct NoTestOrganizers;
//!
//! impl Plugin for NoTestOrganizers {
//!     fn new(_config: Config) -> Result<Self, String> {
//!         Ok(NoTestOrganizers)
//!     }
//!     fn check(&self, event: &EventRef) -> Result<Verdict, Error> {
//!         if event.organizer_id.starts_with("test-") {
//!             return Ok(Verdict::Drop);
//!         }
//!         Ok(Verdict::Keep)
//!     }
//! }
//!
//! export_plugin!(NoTestOrganizers);
//! ```
//!
//! The map:
//! - [`Plugin`]: the trait a plugin implements; `check` sees one event.
//! - [`EventRef`]: an event as `check` reads it (borrowed from the batch);
//!   [`EventRef::to_event`] makes the owned [`Event`] that `modify` returns.
//! - [`Config`]: the plugin's table from the server's TOML.
//! - [`Error`]: what `check` returns to reject one event; it never aborts
//!   the rest of the batch.
//! - [`bindings`]: the types generated from `wit/plugin.wit`, the contract.
//! - [`Memo`]: a batch's answers of a pure function of a text (a user
//!   agent's parse), each worked out once.

use std::cell::RefCell;

use serde_json::{Map, Value};

/// Generated from `wit/plugin.wit`.
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_bindings",
        default_bindings_module: "bilten_plugin_sdk::bindings",
    });
}

mod memo;
pub use memo::Memo;

pub use bindings::bilten::plugin::types::{
    Batch, Event, PluginInfo, Rejection, Table, TextField, Verdict,
};

/// A validation or enrichment plugin.
///
/// The server creates a fresh instance for every batch (nothing leaks from
/// one batch or tenant to the next), calls [`Plugin::new`] with the config,
/// then [`Plugin::check`] once per event, in order.
pub trait Plugin: Sized + 'static {
    /// Builds the plugin from its config table. An error here fails the
    /// batch under the plugin's `failure_policy`, and fails a reload.
    fn new(config: Config) -> Result<Self, String>;

    /// Decides one event. An `Err` rejects this event only.
    fn check(&self, event: &EventRef<'_>) -> Result<Verdict, Error>;
}

/// Why one event is refused: becomes a `reject` verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub code: String,
    pub message: String,
    pub field: Option<String>,
}

impl Error {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            code: code.into(),
            message: message.into(),
            field: None,
        }
    }

    /// The same error, blaming one field.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl From<Error> for Verdict {
    fn from(e: Error) -> Verdict {
        Verdict::Reject(Rejection {
            code: e.code,
            message: e.message,
            field: e.field,
        })
    }
}

impl Verdict {
    /// `reject` with a code, the field at fault, and a message.
    pub fn reject(code: &str, field: &str, message: impl Into<String>) -> Verdict {
        Error::new(code, message).field(field).into()
    }
}

mod event;

pub use event::{EventRef, INTERFACE_VERSION, TEXT_FIELDS};

impl Batch {
    /// How many events the batch holds.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Every event, in order.
    pub fn events(&self) -> impl Iterator<Item = EventRef<'_>> {
        (0..self.len()).map(|i| self.event(i))
    }
}

impl<'a> EventRef<'a> {
    /// The properties as a JSON object.
    pub fn properties(&self) -> Result<Map<String, Value>, Error> {
        parse_properties(self.properties)
    }
}

fn parse_properties(text: &str) -> Result<Map<String, Value>, Error> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) | Err(_) => {
            Err(Error::new("bad_properties", "properties is not a JSON object").field("properties"))
        }
    }
}

impl Event {
    /// The properties as a JSON object.
    pub fn properties(&self) -> Result<Map<String, Value>, Error> {
        parse_properties(&self.properties)
    }

    pub fn set_properties(&mut self, properties: &Map<String, Value>) {
        self.properties = Value::Object(properties.clone()).to_string();
    }
}

/// The time the server received the batch, in epoch milliseconds. The
/// server pins a plugin's wall clock to it, so a plugin's view of "now" is
/// the same for every event of a batch, and a replay decides the same way.
/// Within a batch it is read from the host once (a clock read is a call
/// out of the sandbox, a visible share of a plugin's time per event).
pub fn now_ms() -> i64 {
    let read = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    };
    __rt::BATCH_NOW.with(|now| match now.get() {
        __rt::Now::Outside => read(),
        __rt::Now::Unread => {
            let ms = read();
            now.set(__rt::Now::Read(ms));
            ms
        }
        __rt::Now::Read(ms) => ms,
    })
}

/// A plugin's config table, from `[plugins.config]` in the server's TOML.
#[derive(Debug, Clone, Default)]
pub struct Config(pub Map<String, Value>);

impl Config {
    pub fn parse(json: &str) -> Result<Config, String> {
        match serde_json::from_str(json) {
            Ok(Value::Object(map)) => Ok(Config(map)),
            Ok(Value::Null) => Ok(Config::default()),
            Ok(other) => Err(format!("config must be a table, got {other}")),
            Err(e) => Err(format!("config is not JSON: {e}")),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    pub fn str_or<'a>(&'a self, key: &str, default: &'a str) -> Result<&'a str, String> {
        match self.0.get(key) {
            None => Ok(default),
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(format!("{key} must be a string, got {other}")),
        }
    }

    pub fn i64_or(&self, key: &str, default: i64) -> Result<i64, String> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| format!("{key} must be a whole number, got {v}")),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.0.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(format!("{key} must be true or false, got {other}")),
        }
    }

    /// A list of strings; `None` when the key is absent.
    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>, String> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("{key} must list strings, got {v}"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(format!("{key} must be a list of strings, got {other}")),
        }
    }
}

/// What [`export_plugin!`] expands to calls; not for plugin authors.
#[doc(hidden)]
pub mod __rt {
    use super::*;

    thread_local! {
        // Wasm instances are single-threaded and live for one batch: the
        // plugin built by `init` waits here for `process`.
        static INSTANCE: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
    }

    pub fn init<P: Plugin>(config: String) -> Result<(), String> {
        let plugin = P::new(Config::parse(&config)?)?;
        INSTANCE.with(|i| *i.borrow_mut() = Some(Box::new(plugin)));
        Ok(())
    }

    /// The batch's clock reading, kept while a batch is processed.
    #[derive(Clone, Copy)]
    pub enum Now {
        Outside,
        Unread,
        Read(i64),
    }

    thread_local! {
        pub static BATCH_NOW: std::cell::Cell<Now> = const { std::cell::Cell::new(Now::Outside) };
    }

    pub fn process<P: Plugin>(batch: Batch) -> Vec<Verdict> {
        BATCH_NOW.with(|now| now.set(Now::Unread));
        let verdicts = process_batch::<P>(batch);
        BATCH_NOW.with(|now| now.set(Now::Outside));
        verdicts
    }

    fn process_batch<P: Plugin>(batch: Batch) -> Vec<Verdict> {
        INSTANCE.with(|i| {
            let slot = i.borrow();
            let Some(plugin) = slot.as_ref().and_then(|p| p.downcast_ref::<P>()) else {
                let e = Error::new("not_initialized", "the host did not call init");
                return batch.events().map(|_| e.clone().into()).collect();
            };
            batch
                .events()
                .map(|event| plugin.check(&event).unwrap_or_else(Verdict::from))
                .collect()
        })
    }
}

/// Exports a [`Plugin`] as the component's `bilten:plugin/validator`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __BiltenPluginExport;

        impl $crate::bindings::exports::bilten::plugin::validator::Guest for __BiltenPluginExport {
            fn info() -> $crate::PluginInfo {
                $crate::PluginInfo {
                    name: env!("CARGO_PKG_NAME").into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }
            }
            fn init(config: String) -> Result<(), String> {
                $crate::__rt::init::<$plugin>(config)
            }
            fn process(batch: $crate::Batch) -> Vec<$crate::Verdict> {
                $crate::__rt::process::<$plugin>(batch)
            }
        }

        $crate::bindings::__export_bindings!(__BiltenPluginExport);
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Fuzzing the reader: whatever layout a (buggy or older) host
        /// sends, reading every event and its properties never panics.
        #[test]
        fn any_batch_layout_reads_without_panicking(
            text in ".{0,200}",
            offsets in prop::collection::vec(any::<u32>().prop_map(|o| o % 256), 0..64),
            tables in prop::collection::vec(any::<u8>(), 0..6),
            numbers in prop::collection::vec(any::<i64>(), 0..6),
            quantities in prop::collection::vec(any::<u32>(), 0..6),
            durations in prop::collection::vec(any::<u64>(), 0..6),
        ) {
            let b = Batch {
                text,
                offsets,
                tables,
                timestamps_ms: numbers.clone(),
                durations_ms: durations,
                quantities,
                prices_cents: numbers,
            };
            for e in b.events() {
                let _ = e.properties();
                let _ = e.to_event();
            }
            prop_assert_eq!(b.events().count(), b.len());
        }

        /// A batch the host builds reads back field for field.
        #[test]
        fn batches_round_trip(ids in prop::collection::vec("[a-z0-9-]{0,40}", 1..5), props in "\\{\"k\":\"[a-zA-Z0-9 é€]{0,20}\"\\}") {
            let events: Vec<Event> = ids.iter().map(|id| {
                let mut e = empty_event();
                e.id = id.clone();
                e.properties = props.clone();
                e
            }).collect();
            let b = Batch::of(&events);
            for (e, want) in b.events().zip(&events) {
                prop_assert_eq!(e.id, want.id.as_str());
                prop_assert_eq!(e.properties, want.properties.as_str());
                prop_assert!(e.properties().is_ok());
            }
        }
    }

    fn empty_event() -> Event {
        Event {
            id: String::new(),
            table: Table::Events,
            timestamp_ms: 0,
            event_type: String::new(),
            event_name: String::new(),
            organizer_id: String::new(),
            user_id: String::new(),
            session_id: String::new(),
            event_id: String::new(),
            properties: String::new(),
            user_agent: String::new(),
            ip: String::new(),
            url: String::new(),
            referrer: String::new(),
            duration_ms: 0,
            order_id: String::new(),
            quantity: 0,
            price_cents: 0,
            currency: String::new(),
        }
    }

    /// A batch of one event per organizer, laid out the way the host lays one out.
    fn batch(organizers: &[&str]) -> Batch {
        let events: Vec<Event> = organizers
            .iter()
            .map(|org| Event {
                id: "0193f0a0-0000-7000-8000-000000000001".into(),
                table: Table::TicketSales,
                timestamp_ms: 1_764_000_000_000,
                event_type: "ticket_sale".into(),
                event_name: String::new(),
                organizer_id: org.to_string(),
                user_id: "u-1".into(),
                session_id: String::new(),
                event_id: "evt-9".into(),
                properties: r#"{"a":1}"#.into(),
                user_agent: String::new(),
                ip: String::new(),
                url: String::new(),
                referrer: String::new(),
                duration_ms: 7,
                order_id: "ord-1".into(),
                quantity: 2,
                price_cents: 1250,
                currency: "EUR".into(),
            })
            .collect();
        Batch::of(&events)
    }

    struct OnlyOrg(String);

    impl Plugin for OnlyOrg {
        fn new(config: Config) -> Result<Self, String> {
            Ok(OnlyOrg(config.str_or("org", "org-1")?.to_string()))
        }
        fn check(&self, event: &EventRef) -> Result<Verdict, Error> {
            if event.organizer_id == self.0 {
                Ok(Verdict::Keep)
            } else {
                Err(Error::new("wrong_org", "not ours").field("organizer_id"))
            }
        }
    }

    #[test]
    fn an_error_rejects_one_event_and_the_rest_go_on() {
        __rt::init::<OnlyOrg>(r#"{"org":"org-2"}"#.into()).unwrap();
        let verdicts = __rt::process::<OnlyOrg>(batch(&["org-1", "org-2"]));
        assert_eq!(verdicts.len(), 2);
        match &verdicts[0] {
            Verdict::Reject(r) => {
                assert_eq!(r.code, "wrong_org");
                assert_eq!(r.field.as_deref(), Some("organizer_id"));
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert!(matches!(verdicts[1], Verdict::Keep));
    }

    #[test]
    fn the_clock_is_read_once_per_batch_and_freely_outside_one() {
        use std::time::Duration;
        __rt::BATCH_NOW.with(|n| n.set(__rt::Now::Unread));
        let first = now_ms();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(now_ms(), first, "one reading within a batch");
        __rt::BATCH_NOW.with(|n| n.set(__rt::Now::Outside));
        std::thread::sleep(Duration::from_millis(5));
        assert!(now_ms() > first, "outside a batch the clock moves");
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = __rt::init::<OnlyOrg>(r#"{"org":5}"#.into()).unwrap_err();
        assert_eq!(err, "org must be a string, got 5");
        let err = Config::parse("[1]").unwrap_err();
        assert!(err.starts_with("config must be a table"), "{err}");
    }

    #[test]
    fn events_read_back_from_the_columns_and_round_trip_to_owned_events() {
        let b = batch(&["org-1", "org-22"]);
        assert_eq!(b.len(), 2);
        assert_eq!(b.offsets.len(), 2 * 14 + 1);
        let second = b.event(1);
        assert_eq!(second.organizer_id, "org-22");
        assert_eq!(second.event_type, "ticket_sale");
        assert_eq!(second.table, Table::TicketSales);
        assert_eq!(
            (
                second.order_id,
                second.currency,
                second.quantity,
                second.price_cents
            ),
            ("ord-1", "EUR", 2, 1250)
        );
        assert_eq!((second.duration_ms, second.user_agent), (7, ""));
        let mut e = second.to_event();
        assert_eq!(e.organizer_id, "org-22");
        assert_eq!(Batch::of(std::slice::from_ref(&e)).event(0), second);
        let mut p = second.properties().unwrap();
        p.insert("b".into(), Value::from("x"));
        e.set_properties(&p);
        assert_eq!(e.properties, r#"{"a":1,"b":"x"}"#);
        e.properties = "[]".into();
        assert_eq!(e.properties().unwrap_err().code, "bad_properties");
    }

    #[test]
    fn a_batch_laid_out_wrong_reads_as_empty_not_a_panic() {
        let mut b = batch(&["org-1"]);
        b.offsets[4] = 10_000;
        b.offsets.truncate(12);
        b.prices_cents.clear();
        b.tables[0] = 9;
        let e = b.event(0);
        assert_eq!((e.organizer_id, e.user_id, e.currency), ("", "", ""));
        assert_eq!((e.price_cents, e.table), (0, Table::Events));
        assert_eq!(b.event(5).id, "");
    }
}
