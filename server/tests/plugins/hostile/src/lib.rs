//! A plugin that misbehaves the way its config's `mode` says, for the
//! sandbox tests. Where the sandbox refuses something (a file, a socket, an
//! environment variable), the plugin rejects the event with what it got,
//! so the test can read it.

use bilten_plugin_sdk::{Config, Error, EventRef, Plugin, Verdict, export_plugin};

struct Hostile {
    mode: String,
    /// Misbehave only on events of this type (so the plugin passes the
    /// server's check on sample events, and fails in service).
    trigger: Option<String>,
}

impl Plugin for Hostile {
    fn new(config: Config) -> Result<Self, String> {
        let mode = config.str_or("mode", "keep")?.to_string();
        if mode == "bad_init" {
            return Err("bad_init: refusing to start".into());
        }
        let trigger = config
            .get("trigger")
            .and_then(|t| t.as_str())
            .map(str::to_string);
        Ok(Hostile { mode, trigger })
    }

    fn check(&self, event: &EventRef) -> Result<Verdict, Error> {
        if self
            .trigger
            .as_ref()
            .is_some_and(|t| *t != event.event_type)
        {
            return Ok(Verdict::Keep);
        }
        match self.mode.as_str() {
            "keep" => Ok(Verdict::Keep),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("hostile plugin panicked on purpose"),
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(Verdict::Keep)
            }
            "print" => {
                for i in 0..20_000 {
                    println!("line {i} of a very chatty plugin");
                }
                Ok(Verdict::Keep)
            }
            "huge_modify" => {
                let mut event = event.to_event();
                event.properties = format!("{{\"junk\":\"{}\"}}", "x".repeat(1 << 20));
                Ok(Verdict::Modify(event))
            }
            "change_id" => {
                let mut event = event.to_event();
                event.id = "00000000-0000-0000-0000-000000000000".into();
                Ok(Verdict::Modify(event))
            }
            "huge_reject" => Err(Error::new("huge", "x".repeat(1 << 20))),
            "change_organizer" => {
                let mut event = event.to_event();
                event.organizer_id = "org-someone-else".into();
                Ok(Verdict::Modify(event))
            }
            "tag" => {
                let mut p = event.properties()?;
                let mut event = event.to_event();
                p.insert("tagged_by".into(), "hostile".into());
                event.set_properties(&p);
                Ok(Verdict::Modify(event))
            }
            "file" => Err(Error::new(
                "probe",
                match std::fs::read_to_string("/etc/passwd") {
                    Ok(text) => format!("read {} bytes", text.len()),
                    Err(e) => format!("file refused: {e}"),
                },
            )),
            "socket" => Err(Error::new(
                "probe",
                match std::net::TcpStream::connect("127.0.0.1:8080") {
                    Ok(_) => "connected".to_string(),
                    Err(e) => format!("socket refused: {e}"),
                },
            )),
            "env" => Err(Error::new(
                "probe",
                format!(
                    "env: {} variables, HOME={:?}",
                    std::env::vars().count(),
                    std::env::var("HOME").ok()
                ),
            )),
            "clock" => Err(Error::new(
                "probe",
                format!("now_ms={}", bilten_plugin_sdk::now_ms()),
            )),
            other => Err(Error::new("bad_mode", format!("unknown mode {other}"))),
        }
    }
}

export_plugin!(Hostile);
