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

pub use bindings::bilten::plugin::types::{
    Batch, Event, EventView, PluginInfo, Rejection, Span, Table, Verdict,
};

/// The interface version plugins built with this SDK implement; the server
/// checks it when it loads a plugin.
pub const INTERFACE_VERSION: &str = "1.0.0";

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

/// One event of the batch, as `check` reads it: text borrowed from the
/// batch, every field typed. Fields a table does not have are empty or zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventRef<'a> {
    pub id: &'a str,
    pub table: Table,
    pub timestamp_ms: i64,
    pub event_type: &'a str,
    pub event_name: &'a str,
    pub organizer_id: &'a str,
    pub user_id: &'a str,
    pub session_id: &'a str,
    pub event_id: &'a str,
    /// A JSON object as text; [`EventRef::properties`] parses it.
    pub properties: &'a str,
    pub user_agent: &'a str,
    pub ip: &'a str,
    pub url: &'a str,
    pub referrer: &'a str,
    pub duration_ms: u64,
    pub order_id: &'a str,
    pub quantity: u32,
    pub price_cents: i64,
    pub currency: &'a str,
}

impl<'a> EventRef<'a> {
    /// The event `v` of a batch whose text is `text`.
    pub fn new(text: &'a str, v: &EventView) -> EventRef<'a> {
        let s = |span: Span| {
            let start = span.start as usize;
            text.get(start..start + span.len as usize).unwrap_or("")
        };
        EventRef {
            id: s(v.id),
            table: v.table,
            timestamp_ms: v.timestamp_ms,
            event_type: s(v.event_type),
            event_name: s(v.event_name),
            organizer_id: s(v.organizer_id),
            user_id: s(v.user_id),
            session_id: s(v.session_id),
            event_id: s(v.event_id),
            properties: s(v.properties),
            user_agent: s(v.user_agent),
            ip: s(v.ip),
            url: s(v.url),
            referrer: s(v.referrer),
            duration_ms: v.duration_ms,
            order_id: s(v.order_id),
            quantity: v.quantity,
            price_cents: v.price_cents,
            currency: s(v.currency),
        }
    }

    /// The properties as a JSON object.
    pub fn properties(&self) -> Result<Map<String, Value>, Error> {
        parse_properties(self.properties)
    }

    /// An owned copy, to change and return in `Verdict::Modify`.
    pub fn to_event(&self) -> Event {
        Event {
            id: self.id.into(),
            table: self.table,
            timestamp_ms: self.timestamp_ms,
            event_type: self.event_type.into(),
            event_name: self.event_name.into(),
            organizer_id: self.organizer_id.into(),
            user_id: self.user_id.into(),
            session_id: self.session_id.into(),
            event_id: self.event_id.into(),
            properties: self.properties.into(),
            user_agent: self.user_agent.into(),
            ip: self.ip.into(),
            url: self.url.into(),
            referrer: self.referrer.into(),
            duration_ms: self.duration_ms,
            order_id: self.order_id.into(),
            quantity: self.quantity,
            price_cents: self.price_cents,
            currency: self.currency.into(),
        }
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
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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

    pub fn process<P: Plugin>(batch: Batch) -> Vec<Verdict> {
        INSTANCE.with(|i| {
            let slot = i.borrow();
            let Some(plugin) = slot.as_ref().and_then(|p| p.downcast_ref::<P>()) else {
                let e = Error::new("not_initialized", "the host did not call init");
                return batch.events.iter().map(|_| e.clone().into()).collect();
            };
            batch
                .events
                .iter()
                .map(|v| {
                    let event = EventRef::new(&batch.text, v);
                    plugin.check(&event).unwrap_or_else(Verdict::from)
                })
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

    /// A batch of one event per organizer, built the way the host builds one.
    fn batch(organizers: &[&str]) -> Batch {
        let mut text = String::new();
        let mut span = |s: &str| {
            let start = text.len() as u32;
            text.push_str(s);
            Span {
                start,
                len: s.len() as u32,
            }
        };
        let events = organizers
            .iter()
            .map(|org| EventView {
                id: span("0193f0a0-0000-7000-8000-000000000001"),
                table: Table::Events,
                timestamp_ms: 1_764_000_000_000,
                event_type: span("page_view"),
                event_name: span(""),
                organizer_id: span(org),
                user_id: span(""),
                session_id: span(""),
                event_id: span(""),
                properties: span(r#"{"a":1}"#),
                user_agent: span(""),
                ip: span(""),
                url: span(""),
                referrer: span(""),
                duration_ms: 0,
                order_id: span(""),
                quantity: 0,
                price_cents: 0,
                currency: span(""),
            })
            .collect();
        Batch { text, events }
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
    fn config_errors_name_the_key() {
        let err = __rt::init::<OnlyOrg>(r#"{"org":5}"#.into()).unwrap_err();
        assert_eq!(err, "org must be a string, got 5");
        let err = Config::parse("[1]").unwrap_err();
        assert!(err.starts_with("config must be a table"), "{err}");
    }

    #[test]
    fn views_read_their_spans_and_round_trip_to_owned_events() {
        let b = batch(&["org-1", "org-22"]);
        let second = EventRef::new(&b.text, &b.events[1]);
        assert_eq!(second.organizer_id, "org-22");
        assert_eq!(second.event_type, "page_view");
        let mut e = second.to_event();
        assert_eq!(e.organizer_id, "org-22");
        let mut p = second.properties().unwrap();
        p.insert("b".into(), Value::from("x"));
        e.set_properties(&p);
        assert_eq!(e.properties, r#"{"a":1,"b":"x"}"#);
        e.properties = "[]".into();
        assert_eq!(e.properties().unwrap_err().code, "bad_properties");
        // A span past the text reads as empty rather than panicking.
        let mut bad = b.events[0];
        bad.user_id = Span {
            start: 10_000,
            len: 4,
        };
        assert_eq!(EventRef::new(&b.text, &bad).user_id, "");
    }
}
